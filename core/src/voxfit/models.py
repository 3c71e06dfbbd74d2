"""Public data models shared by the core and every plugin.

Everything here is plain pydantic and round-trips through JSON, so a
`HardwareProfile` printed by `voxfit detect --json` on one machine can be fed to
`voxfit plan --hardware FILE` on another, and a `Plan` can be stored and diffed.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

# Values a plugin may put into free-form property bags. Kept to JSON scalars so
# that every model survives a JSON round trip unchanged.
Scalar = Union[str, int, float, bool, None]

#: "cpu", "cuda", "mps", or a third party's own family ("rocm", "npu"), as
#: registered through the ``register_device_families`` hook.
DeviceFamily = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_+.-]{0,63}$")]

#: Numeric format of the weights and activations. Plugins may use any lowercase
#: name; these are the ones first-party plugins and the shared estimates know.
#: "n/a" is for engines with no neural weights (a formant synthesizer, a beeper).
KNOWN_PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "n/a")
Precision = Annotated[str, Field(pattern=r"^[a-z0-9/_.-]{1,16}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AcceleratorDevice(_Model):
    """One compute device that a plugin found (the CPU counts as one)."""

    id: str = Field(description='Stable id used in proposals, e.g. "cuda:0", "mps", "cpu".')
    family: DeviceFamily
    name: str
    index: int = 0
    memory_total_bytes: Optional[int] = None
    memory_free_bytes: Optional[int] = None
    utilization_percent: Optional[float] = None
    capabilities: dict[str, Scalar] = Field(
        default_factory=dict,
        description="What the device can do: compute capability, bf16, bandwidth_gbps, isa flags...",
    )
    flags: list[str] = Field(default_factory=list, description='Conditions such as "wsl2", "mig", "busy".')
    detected_by: str = ""


class HardwareProfile(_Model):
    """Everything a plan may depend on about the machine."""

    schema_version: int = 1
    os: str = Field(description='"linux", "darwin", "windows" (platform.system().lower()).')
    os_release: str = ""
    arch: str = Field(description='Normalised machine architecture: "x86_64", "arm64", ...')
    python: str = ""
    cpu_model: str = ""
    cores_physical: Optional[int] = None
    cores_logical: Optional[int] = None
    isa_flags: list[str] = Field(default_factory=list)
    memory_total_bytes: Optional[int] = None
    memory_available_bytes: Optional[int] = None
    devices: list[AcceleratorDevice] = Field(default_factory=list)
    flags: dict[str, Scalar] = Field(default_factory=dict, description='Machine-wide facts, e.g. {"wsl": "wsl2"}.')
    notes: list[str] = Field(default_factory=list)
    source: str = Field(default="detected", description='"detected" or the file it was loaded from.')

    def device(self, device_id: str) -> Optional[AcceleratorDevice]:
        return next((d for d in self.devices if d.id == device_id), None)


class Detection(_Model):
    """What one plugin's `detect` hook returns."""

    devices: list[AcceleratorDevice] = Field(default_factory=list)
    flags: dict[str, Scalar] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class PlanInputs(_Model):
    """What a plugin's ``detect``, ``score_config`` and ``prepare_env`` read beyond their arguments.

    A remembered plan is reused only while every declared input reads as it did
    when the plan was made (see the ``plan_inputs`` hook). Paths are absolute.
    """

    environ: list[str] = Field(
        default_factory=list, description='Environment variables read, e.g. "CUDA_VISIBLE_DEVICES".'
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Files, directories and device nodes read or checked for: their presence, type, permissions "
        'and (for a small file) content are compared, e.g. "/proc/driver/nvidia/version".',
    )
    globs: list[str] = Field(
        default_factory=list, description='Patterns whose matches are compared, e.g. "/dev/nvidia*".'
    )

    @field_validator("environ")
    @classmethod
    def _variable_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or "=" in name or "\x00" in name:
                raise ValueError(f"{name!r} is not an environment variable name")
        return names

    @field_validator("paths", "globs")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not (PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute()) or "\x00" in path:
                raise ValueError(f"{path!r} is not an absolute path")
        return paths


class MemoryEstimate(_Model):
    """Bytes a model needs at one precision, split so a reader can see why."""

    weights_bytes: int
    kv_cache_bytes: int = 0
    codec_bytes: int = 0
    buffers_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.codec_bytes + self.buffers_bytes


class ModelSpec(_Model):
    """The model to run, resolved from a path or the embedded default, without loading it."""

    family: str = Field(description="The model's family: what engines say they run (EngineInfo.families).")
    name: str
    path: Optional[Path] = None
    files: dict[str, Path] = Field(default_factory=dict)
    parameter_count: Optional[int] = None
    sample_rate: Optional[int] = None
    memory: dict[str, MemoryEstimate] = Field(
        default_factory=dict, description="Memory needed per precision or variant name."
    )
    needs: list[str] = Field(default_factory=list, description="Runtime capabilities the model needs.")
    properties: dict[str, Scalar] = Field(default_factory=dict)
    source: str = Field(default="path", description='"embedded", "path", or how a plugin found it.')
    resolved_by: str = Field(default="", description="Plugin whose model format recognised it; the core stamps it.")


class Estimate(_Model):
    """What a plugin expects a proposal to do on this machine, before anything is loaded.

    Each figure is optional: leave out what you cannot estimate rather than
    guess. The ranking reads ``peak_memory_bytes`` (a proposal that would not
    fit, with the plan's headroom, is vetoed); the plan shows the rest, and a
    proposal's ``score`` should follow from ``rtf`` (about 1 / RTF).
    """

    rtf: Optional[float] = Field(
        default=None, description="Real-time factor: synthesis wall time / duration of the audio (< 1 is faster).")
    peak_memory_bytes: Optional[int] = Field(
        default=None, description="Most memory the run holds at once, in the proposal's memory pool.")
    per_request_bytes: Optional[int] = Field(
        default=None, description="Of the peak, what one request holds while it runs (activations of its longest "
        "chunk): a server running n at once on one engine needs peak + (n - 1) x this.")
    tokens_per_s: Optional[float] = Field(default=None, description="Tokens generated per second, for token models.")
    load_seconds: Optional[float] = Field(default=None, description="Seconds from nothing to a loaded engine.")


class ProposalOptions(BaseModel):
    """How the owning plugin will load a proposal: settings only it reads (a GPU's id, a runtime's session options).

    A plugin subclasses it with typed fields and declares the subclass as its
    module's ``PROPOSAL_OPTIONS``; the core validates every proposal the
    plugin returns against it, and again when a remembered plan is reused, so
    ``load_engine`` receives exactly that model. A plugin that declares none
    gets this class, which keeps whatever fields it was given.
    """

    model_config = ConfigDict(extra="allow")

    variant: str = Field(default="", description="A name for proposals that differ only in their options.")


class ProposalFacts(BaseModel):
    """Decisions about a proposal that other plugins may act on, as typed fields rather than text to parse.

    The fields here are the shared vocabulary; a plugin adds its own in a subclass declared as its module's
    ``PROPOSAL_FACTS`` (validated like ``PROPOSAL_OPTIONS``).
    """

    model_config = ConfigDict(extra="allow")

    compile_blocked: Optional[str] = Field(
        default=None, description="Why compilation is off because of the platform rather than the proposal: "
        '"os" (no compiler runtime on this operating system), "no-triton", "old-gpu", "unknown-triton". A plugin '
        "that knows the platform better (WSL2 is Linux) may offer a compiled twin.")


def format_score(score: float) -> str:
    """A score as people read it: two decimals, or two significant digits below 0.1 (0.005, not 0.01)."""
    return f"{score:.2f}" if score >= 0.1 or score == 0 else f"{score:.2g}"


class Proposal(_Model):
    """One way to run the model, proposed by a plugin's `score_config`.

    `score` is higher-is-better on a scale shared by all plugins: roughly the
    expected speed (audio seconds produced per wall second, i.e. 1 / RTF),
    multiplied down for risk (unmeasured benefit, shared GPU, ...). `reasons`
    say, in words a user understands, why the plugin proposes this and how it
    got the score; `vetoes` are the plugin's own hard objections (the proposal
    is then shown among the rejected ones, never chosen).
    """

    plugin: str = Field(default="", description="Owning plugin; the core stamps it.")
    device: str = Field(description='Device id from the hardware profile, e.g. "cpu", "cuda:0".')
    device_family: DeviceFamily
    engine: str = Field(description="Engine backend, by the name it was registered under (register_engines).")
    precision: Precision = "fp32"
    quantization: str = Field(default="none", description='"none", "int8-weight-only", "int8-dynamic-quint8", ...')
    compile: bool = False
    threads: Optional[int] = None
    chunk_chars: int = Field(default=400, description="Longest text chunk handed to the engine at once.")
    batch_size: int = Field(
        default=1, ge=1, description="Sequences the engine decodes together (continuous batching): the requests "
        "one loaded engine runs at once. Its reason is among the reasons.")
    options: SerializeAsAny[ProposalOptions] = Field(
        default_factory=ProposalOptions, description="How the owner loads it (its PROPOSAL_OPTIONS model).")
    requires: list[str] = Field(
        default_factory=list, description="Python modules that must be importable to run this."
    )
    memory_pool: Literal["device", "system"] = Field(
        default="system", description="Whether peak memory comes from the device's memory or system RAM."
    )
    estimate: Estimate = Field(default_factory=Estimate)
    score: float = 0.0
    reasons: list[str] = Field(default_factory=list)
    vetoes: list[str] = Field(default_factory=list)
    facts: SerializeAsAny[ProposalFacts] = Field(
        default_factory=ProposalFacts, description="Decisions other plugins may act on (its PROPOSAL_FACTS model).")
    score_factors: dict[str, float] = Field(
        default_factory=dict,
        description="Named multipliers that shaped the score (e.g. a busy-GPU load penalty), "
        "so a plan summary can say when one decided.",
    )

    def shown_score(self) -> str:
        return format_score(self.score)

    def label(self) -> str:
        parts = [self.engine, self.device, self.precision]
        if self.quantization != "none":
            parts.append(self.quantization)
        if self.compile:
            parts.append("compiled")
        if self.threads:
            parts.append(f"{self.threads} thread" + ("s" if self.threads != 1 else ""))
        if self.batch_size > 1:
            parts.append(f"batch {self.batch_size}")
        if self.options.variant:  # a plugin's name for proposals that differ only in options
            parts.append(self.options.variant)
        return f"{self.plugin}: " + ", ".join(parts)


class RejectedProposal(_Model):
    proposal: Proposal
    reasons: list[str]


class EnvChange(_Model):
    """One change a plugin asks the core to make to the process before loading.

    Plugins never touch `os.environ` themselves: they describe the change and
    the core applies and records it, so `voxfit plan` can show it beforehand.
    """

    kind: Literal["set_env", "unset_env", "prepend_path", "mp_start_method"]
    key: str = Field(default="", description="Variable name; empty for mp_start_method.")
    value: str = ""
    reason: str
    plugin: str = ""

    def describe(self) -> str:
        if self.kind == "set_env":
            what = f"{self.key}={self.value!r}"
        elif self.kind == "unset_env":
            what = f"unset {self.key}"
        elif self.kind == "prepend_path":
            what = f"{self.key}={self.value}:${self.key}"
        else:
            what = f"multiprocessing start method {self.value}"
        return f"{what} ({self.plugin}: {self.reason})"


class PluginProblem(_Model):
    """A plugin's contribution that was dropped, and why."""

    plugin: str
    hook: str
    error: str


class PlanCacheInfo(_Model):
    """Whether a plan was remembered from an earlier command, when it was made, and why (not) reused."""

    reused: bool
    made_at: Optional[str] = None
    reason: str = ""
    stored: bool = Field(default=False, description="Remembered for the next command with the same inputs.")


class Plan(_Model):
    """What the core decided, with everything a person needs to check it."""

    model: ModelSpec
    hardware: HardwareProfile
    device_lock: str = "auto"
    chosen: Optional[Proposal] = None
    alternatives: list[Proposal] = Field(default_factory=list)
    rejected: list[RejectedProposal] = Field(default_factory=list)
    env_changes: list[EnvChange] = Field(default_factory=list)
    problems: list[PluginProblem] = Field(default_factory=list)
    summary: str = ""
    plan_cache: Optional[PlanCacheInfo] = Field(
        default=None, description="Set by the commands that print a plan: whether it was reused, and why."
    )

    def ranked(self) -> list[Proposal]:
        """The chosen proposal followed by the alternatives, in order of preference."""
        return ([self.chosen] if self.chosen else []) + list(self.alternatives)


class PluginInfo(_Model):
    name: str
    distribution: Optional[str] = None
    version: Optional[str] = None
    api_version: Optional[str] = None
    hooks: list[str] = Field(default_factory=list)
    status: Literal["ok", "broken", "skipped", "blocked", "refused"]
    error: Optional[str] = None
    module: Optional[str] = Field(
        default=None, description="The module the entry point loaded: its package's files key the plan cache."
    )
