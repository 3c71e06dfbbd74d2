"""Loading Fish Speech on the chosen GPU through the registered fish-torch engine, watched by the sampler."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

from voxfit.sdk import EngineLoadError, ModelSpec, Proposal, Registry

from .proposal_options import cuda_options


def torch_device(proposal: Proposal, environ: Mapping[str, str]) -> str:
    """The ``cuda:N`` ordinal torch must use for the proposal's GPU inside this process.

    The plan names GPUs by their nvidia-smi index (``cuda:1`` is the second
    GPU on the PCI bus), but torch numbers only the GPUs CUDA_VISIBLE_DEVICES
    lets through, from 0. prepare_env narrowed the variable to the chosen GPU
    alone, so that GPU is ``cuda:0`` here; passing the plan's ``cuda:1`` on
    would address a GPU that no longer exists in this process (or, with the
    variable unset, possibly another card, since CUDA orders fastest-first).
    """
    gpu = cuda_options(proposal)
    uuid, index = gpu.uuid, str(gpu.nvml_index)
    raw = environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        if environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" and index:
            return f"cuda:{index}"
        raise EngineLoadError(
            f"cannot place the model on {proposal.device}: CUDA_VISIBLE_DEVICES was not narrowed to it and "
            "CUDA_DEVICE_ORDER is not PCI_BUS_ID, so its CUDA ordinal is unknown (prepare_env did not run?)"
        )
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if not entries or entries == ["-1"]:
        raise EngineLoadError(f"cannot load on {proposal.device}: CUDA_VISIBLE_DEVICES={raw!r} hides every GPU")
    for position, entry in enumerate(entries):
        if (uuid and entry.startswith(("GPU-", "MIG-")) and uuid.startswith(entry)) or entry == index:
            return f"cuda:{position}"
    raise EngineLoadError(f"{proposal.device} is not among the visible GPUs (CUDA_VISIBLE_DEVICES={raw!r})")


def _nvml() -> Optional[Any]:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def load(
    proposal: Proposal,
    model: ModelSpec,
    engines: Registry,
    environ: Optional[Mapping[str, str]] = None,
    cache_dir: Optional[Path] = None,
) -> Any:
    from .sampler import GpuSampler, SampledEngine

    if model.family != "fish":
        raise EngineLoadError(f"the cuda plugin loads only Fish Speech models, not {model.family}")
    device = torch_device(proposal, os.environ if environ is None else environ)
    try:
        load_fish_engine = engines.loader(proposal.engine)
    except (LookupError, ImportError) as exc:
        raise EngineLoadError(f"the {proposal.engine} engine cannot be loaded: {exc}") from None
    engine = load_fish_engine(
        model,
        device=device,
        precision=proposal.precision,
        quantization=proposal.quantization,
        compile=proposal.compile,
        threads=None,  # GPU decoding: torch's CPU thread count does not matter here
        cache_dir=cache_dir,
        batch_size=proposal.batch_size,
        planned_tokens_per_s=proposal.estimate.tokens_per_s,
    )
    nvml = _nvml()
    if nvml is None:
        return engine  # cannot sample without NVML; the engine itself still runs
    # NVML ignores CUDA_VISIBLE_DEVICES: the sampler addresses the GPU by UUID (or nvidia-smi index), not cuda:0.
    gpu = cuda_options(proposal)
    sampler = GpuSampler(nvml, uuid=gpu.uuid, nvml_index=gpu.nvml_index)
    return SampledEngine(engine, sampler)
