"""The plugin SDK: everything a voxfit plugin may import from the core, and nothing else.

Plugins (first-party ones included) import from ``voxfit.sdk`` only; the rest
of the core may change between minor versions without notice. A test parses
every first-party plugin and the documented example and fails if one imports
anything else from ``voxfit``. Plugins declare a compatible range of the core
(``voxfit>=0.2,<0.3``), not an exact pin.

Groups:

* hooks:       :data:`hookimpl`, :data:`HOOK_API_VERSION`
* data models: what hooks receive and return (profiles, specs, proposals...)
* engines:     the engine contract, its optional capabilities and registration
* errors:      the exceptions hooks may raise, each with a documented meaning
* helpers:     estimates on one scale, the CPU load at plan time, memory formatting, bounded reads of
               small files, cache files that prove they are whole
               (``load_or_rebuild``), measurements from ``voxfit tune``, the
               host's CPU facts
"""

from __future__ import annotations

from voxfit.engine import (
    ANY_FAMILY,
    AudioChunk,
    ConcurrentSynthesis,
    Configurable,
    DecodeCalibration,
    Engine,
    EngineInfo,
    HasNotes,
    Pacing,
    ReplaceableDecoder,
    ReportsMetrics,
    Wrapper,
    innermost,
)
from voxfit.errors import (
    EngineLoadError,
    InvariantViolation,
    ModelError,
    PluginUnavailable,
    UsageError,
    VoxfitError,
    one_line,
)
from voxfit.hookspecs import HOOK_API_VERSION, hookimpl
from voxfit.models import (
    KNOWN_PRECISIONS,
    AcceleratorDevice,
    Detection,
    EnvChange,
    Estimate,
    HardwareProfile,
    MemoryEstimate,
    ModelSpec,
    PlanInputs,
    Proposal,
    ProposalFacts,
    ProposalOptions,
    Scalar,
)
from voxfit.planning.batching import BatchPlan, plan_batch
from voxfit.planning.cpu_affinity import usable_count as usable_cpu_count
from voxfit.planning.cpu_load import CpuLoad
from voxfit.planning.cpu_load import snapshot as cpu_load_snapshot
from voxfit.planning.estimates import DecodeSpeed, decode_speed
from voxfit.planning.hardware import describe_memory, detect_host
from voxfit.planning.measurements import load as load_measurements
from voxfit.planning.measurements import load_decision as load_tune_decision
from voxfit.planning.measurements import lookup as lookup_measurement
from voxfit.planning.measurements import module_versions, proposal_key
from voxfit.registry import DeviceFamilyInfo, Registry
from voxfit.settings import Settings
from voxfit.speaking.invariants import violations as training_artifacts
from voxfit.util.artifacts import RebuildFailed, load_or_rebuild, publish, recorded_target, sweep_stale
from voxfit.util.files import (
    UnreadableFile,
    atomic_target,
    file_sha256,
    load_small_json,
    load_small_text,
    read_json,
    read_small_bytes,
    read_small_text,
    write_atomic,
)


def tokens_per_audio_second(model: ModelSpec) -> float | None:
    """Tokens a token-based model generates per second of audio (its spec's
    ``tokens_per_audio_second`` property), or None for a model without tokens."""
    value = model.properties.get("tokens_per_audio_second")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


__all__ = [
    # hooks
    "HOOK_API_VERSION",
    "hookimpl",
    # data models
    "AcceleratorDevice",
    "Detection",
    "EnvChange",
    "Estimate",
    "HardwareProfile",
    "KNOWN_PRECISIONS",
    "MemoryEstimate",
    "ModelSpec",
    "PlanInputs",
    "Proposal",
    "ProposalFacts",
    "ProposalOptions",
    "Scalar",
    "Settings",
    # engines
    "ANY_FAMILY",
    "AudioChunk",
    "ConcurrentSynthesis",
    "Configurable",
    "DecodeCalibration",
    "DeviceFamilyInfo",
    "Engine",
    "EngineInfo",
    "HasNotes",
    "Pacing",
    "Registry",
    "ReplaceableDecoder",
    "ReportsMetrics",
    "Wrapper",
    "innermost",
    # errors
    "EngineLoadError",
    "InvariantViolation",
    "ModelError",
    "PluginUnavailable",
    "RebuildFailed",
    "VoxfitError",
    "UnreadableFile",
    "UsageError",
    "one_line",
    # helpers
    "CpuLoad",
    "cpu_load_snapshot",
    "usable_cpu_count",
    "DecodeSpeed",
    "atomic_target",
    "decode_speed",
    "plan_batch",
    "BatchPlan",
    "describe_memory",
    "detect_host",
    "file_sha256",
    "load_or_rebuild",
    "load_small_json",
    "load_small_text",
    "proposal_key",
    "publish",
    "recorded_target",
    "sweep_stale",
    "load_measurements",
    "load_tune_decision",
    "lookup_measurement",
    "module_versions",
    "read_json",
    "read_small_bytes",
    "read_small_text",
    "tokens_per_audio_second",
    "training_artifacts",
    "write_atomic",
]
