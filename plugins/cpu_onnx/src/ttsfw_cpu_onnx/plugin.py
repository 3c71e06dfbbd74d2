"""ttsfw hooks for CPUs."""

from __future__ import annotations

import importlib.util

from ttsfw import hookimpl
from ttsfw.models import AcceleratorDevice, Detection, HardwareProfile

TTSFW_HOOK_API = "1.0"


@hookimpl
def detect(host: HardwareProfile) -> Detection:
    """The CPU is always present; describe what matters to ONNX Runtime and torch on it."""
    caps: dict[str, object] = {
        "cores_physical": host.cores_physical,
        "cores_logical": host.cores_logical,
        "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
    }
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"):
        if flag in host.isa_flags:
            caps[flag] = True
    cpu = AcceleratorDevice(
        id="cpu",
        family="cpu",
        name=host.cpu_model,
        memory_total_bytes=host.memory_total_bytes,
        memory_free_bytes=host.memory_available_bytes,
        capabilities=caps,  # type: ignore[arg-type]
    )
    return Detection(devices=[cpu])


# -- Fish Speech (OpenAudio S1) checkpoints: see ttsfw_cpu_onnx.fish ----------------
# One block, kept apart from the Piper hooks: each hook answers only for fish
# models / fish engines and returns None otherwise.

from ttsfw.models import ModelSpec, Proposal  # noqa: E402
from ttsfw.settings import Settings  # noqa: E402

from . import fish as _fish  # noqa: E402


@hookimpl(specname="score_config")
def score_config_fish(model: ModelSpec, hardware: HardwareProfile, settings: Settings) -> list[Proposal]:
    return _fish.proposals(model, hardware, settings)


@hookimpl(specname="prepare_env")
def prepare_env_fish(proposal: Proposal):  # -> Optional[list[EnvChange]]
    return _fish.env_changes(proposal)


@hookimpl(specname="load_engine")
def load_engine_fish(proposal: Proposal, model: ModelSpec, settings: Settings):  # -> Optional[Engine]
    if proposal.plugin != "cpu_onnx" or proposal.engine not in _fish.BACKENDS:
        return None
    return _fish.load(proposal, model, settings)


@hookimpl(specname="disable_training_artifacts")
def disable_training_artifacts_fish(engine):  # -> Optional[list[str]]
    return _fish.disable_training_artifacts(engine)
