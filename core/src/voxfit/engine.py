"""The engine contract: what ``load_engine`` returns and the session drives.

An engine is any object with the five members of :class:`Engine`. Everything
else an engine may do is an optional capability, declared here as its own
protocol and checked with ``isinstance`` (never by probing attributes):

* :class:`Configurable`  takes the voice options the user gave (typed by the
  engine's registered options model) before synthesis;
* :class:`ConcurrentSynthesis` speaks several texts at once from different
  threads, each with its own options (a server runs several requests on it);
* :class:`ReportsMetrics` adds what it measured itself (GPU use, tokens) to
  the run's metrics;
* :class:`HasNotes`       says what it decided while loading (a fallback, a
  rebuilt cache), shown to the user;
* :class:`Wrapper`        wraps another engine (a plugin's sampler around the
  real engine): hooks that clean an engine look through it;
* :class:`ReplaceableDecoder` lets a plugin swap the audio decoder for one
  compiled for its hardware (the MPS plugin's Core ML decoder).

What the core knows about a backend *before* loading it is an
:class:`EngineInfo`, registered through the ``register_engines`` hook.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass
class AudioChunk:
    """Mono 16-bit little-endian PCM for one piece of text."""

    pcm: bytes
    sample_rate: int
    text: str = ""
    tokens: Optional[int] = None  # semantic tokens generated, where the engine has tokens

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0


@runtime_checkable
class Engine(Protocol):
    """A loaded, ready-to-run text-to-speech engine."""

    backend: str
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        """Speak one sentence-sized chunk of text; may yield several audio chunks.

        The text never holds control characters (the core's text layer turns
        them into spaces) and is at most the proposal's ``chunk_chars`` long.
        """
        ...

    def inference_modules(self) -> Iterable[Any]:
        """torch modules (or none) on which the core checks the inference invariants."""
        ...

    def close(self) -> None:
        """Release what the engine holds; called once, also after a failure."""
        ...


@runtime_checkable
class Configurable(Protocol):
    """An engine that takes voice options (speaker, speed, a reference clip...)."""

    def configure(self, options: BaseModel) -> None:
        """Apply options already validated against the engine's registered
        ``EngineInfo.options`` model; only the fields the user set are set
        (``options.model_fields_set``). Raise ``UsageError`` for a value that
        only the loaded voice can judge (an unknown speaker name)."""
        ...


@runtime_checkable
class ConcurrentSynthesis(Protocol):
    """An engine that speaks several texts at once, from different threads, each with its own options.

    For engines whose runtime is thread-safe (one ONNX Runtime session: its
    ``run`` is). The session then never calls ``configure`` for a request; a
    server runs up to ``max_concurrent`` requests on the one loaded engine
    instead of one at a time, without loading it again.
    """

    max_concurrent: int

    def synthesize_with(self, text: str, options: Optional[BaseModel], *, first: bool = True) -> Iterator[AudioChunk]:
        """``synthesize`` with these options (validated against the engine's options model; None: the
        voice's defaults), touching no state another call can see. ``first``: whether this is the
        first piece of its text (engines put sentence silence before the others only)."""
        ...


@runtime_checkable
class ReportsMetrics(Protocol):
    """An engine that measures something the core cannot (GPU use during synthesis, tokens generated).

    Its figures are added to the run's metrics under ``engine`` (``voxfit run
    --json``, the server's per-request log); keys with a known meaning
    (``gpu_util_mean_percent``, ``gpu_mem_used_peak_bytes``...) are also shown
    in the CLI's summary.
    """

    def metrics(self) -> dict[str, Any]:
        """What the engine measured during the last synthesis (JSON scalars)."""
        ...


@runtime_checkable
class HasNotes(Protocol):
    """An engine that records what it decided while loading, one line each."""

    notes: list[str]


@runtime_checkable
class Wrapper(Protocol):
    """An engine wrapping another one (e.g. a GPU sampler around the real engine)."""

    inner: Any


@runtime_checkable
class ReplaceableDecoder(Protocol):
    """An engine whose final decoder (codes to waveform) another plugin may replace with one built for its
    hardware, after loading: the MPS plugin swaps in a Core ML decoder. The engine keeps its own decoder for
    anything the replacement cannot do, and says so in its notes."""

    def replace_codec_decoder(self, decoder: Any, backend: Optional[str] = None) -> None:
        """Use ``decoder`` (codes -> waveform) instead of the engine's own; ``backend`` names it."""
        ...


def innermost(engine: Any) -> Any:
    """The engine inside any number of :class:`Wrapper` layers."""
    seen = 0
    while isinstance(engine, Wrapper) and engine.inner is not None and seen < 16:
        engine, seen = engine.inner, seen + 1
    return engine


def engine_notes(engine: Any) -> list[str]:
    """Notes from the engine and every wrapper around it, outermost first."""
    notes: list[str] = []
    layer, seen = engine, 0
    while layer is not None and seen < 16:
        if isinstance(layer, HasNotes):  # a wrapper may forward its inner engine's notes: keep each once
            notes.extend(str(n) for n in layer.notes if str(n) not in notes)
        layer, seen = (layer.inner if isinstance(layer, Wrapper) else None), seen + 1
    return notes


#: ``EngineInfo.families`` holding this runs models of every family (an engine that reads any text file, say).
ANY_FAMILY = "*"


@dataclass(frozen=True)
class Pacing:
    """How an engine's voice options set the pace of speech.

    The parts of voxfit that speak of pace without knowing the engine read
    this: OpenAI's ``speed`` (2.0 = twice as fast) sets ``length_option`` to
    ``1 / speed``; a pause voxfit inserts itself (between a first clause cut
    off for an early start and the rest) is stretched by that option's value;
    and where the user set ``pause_option`` (the engine's own silence between
    sentences), voxfit inserts none.

    :param length_option: an option of the engine's options model that
        stretches time: 1.0 as the voice speaks, 2.0 twice as long.
    :param pause_option: an option that sets the silence between sentences,
        or "" when the engine has none.
    """

    length_option: str
    pause_option: str = ""

    def for_speed(self, speed: float) -> dict[str, float]:
        """The option values that make speech ``speed`` times as fast."""
        return {self.length_option: 1.0 / speed}

    def time_scale(self, options: Optional[BaseModel]) -> float:
        """How much the options stretch time (1.0 when the length option is unset)."""
        value = _option_value(options, self.length_option)
        return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0

    def sets_pauses(self, options: Optional[BaseModel]) -> bool:
        """Whether the user set the engine's own silence between sentences."""
        return bool(self.pause_option) and _option_value(options, self.pause_option) is not None


def _option_value(options: Optional[BaseModel], name: str) -> Any:
    return options.model_dump().get(name) if options is not None else None


@dataclass(frozen=True)
class DecodeCalibration:
    """An autoregressive engine's decoding speed on one device family, for the shared roofline.

    Decoding one token reads every weight once, so it costs the time to stream
    those bytes at ``efficiency`` of the device's bandwidth plus ``overhead_s``
    that does not shrink with bandwidth (Python, kernel launches, syncs); see
    ``voxfit.sdk.decode_speed``. ``source`` says where the numbers come from
    in words a user can check; ``measured`` whether they were measured on
    real hardware. ``compile_speedup`` is what ``torch.compile`` (or the
    engine's own compiler) buys on this family, 1.0 when nothing.
    """

    efficiency: float
    overhead_s: float
    source: str
    measured: bool
    compile_speedup: float = 1.0


@dataclass(frozen=True)
class EngineInfo:
    """What the core knows about an engine backend before loading it.

    :param backend: the name proposals use in ``Proposal.engine``.
    :param families: model families it runs (``ModelSpec.family``).
    :param requires: modules that must be importable to run it; a missing
        one vetoes the proposal with ``install_hint``.
    :param families: model families it runs (``ModelSpec.family``);
        :data:`ANY_FAMILY` for every family.
    :param requires: Python modules that must be importable to run it.
    :param programs: executables that must be on ``PATH`` to run it (an
        engine that drives a program rather than a library).
    :param options: a pydantic model of the voice options the engine takes
        (``None``: it takes none). The CLI, the server, the page and the Python
        API build their inputs from it (its fields' types, ranges, defaults and
        descriptions) and validate the user's options against it before loading.
    :param pacing: which options set the pace of speech (:class:`Pacing`), or
        ``None`` when none does: ``speed`` is then refused for this engine.
    :param speaker_option: the option that picks a speaker of a multi-speaker
        voice (what a Wyoming client's ``speaker`` sets), or "".
    :param decode: per device family, the engine's decoding speed for the
        shared roofline (:class:`DecodeCalibration`); hardware plugins that
        place the engine estimate with it.
    :param loader: ``"module:function"`` building the engine; imported only
        by :meth:`load`, so planning never imports the framework.
    """

    backend: str
    families: frozenset[str]
    requires: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    description: str = ""
    extra: str = ""  # the pip extra that brings its requirements
    install_hint: str = ""
    options: Optional[type[BaseModel]] = None
    pacing: Optional[Pacing] = None
    speaker_option: str = ""
    decode: Mapping[str, DecodeCalibration] = field(default_factory=dict)
    variant_of: str = ""  # another backend whose options, pacing and calibrations this one shares
    loader: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    plugin: str = ""  # stamped by the core: who registered it

    def runs(self, family: str) -> bool:
        """Whether the engine runs models of ``family``."""
        return family in self.families or ANY_FAMILY in self.families

    def load(self) -> Callable[..., Any]:
        """The loader function (imports its module now)."""
        if not self.loader or ":" not in self.loader:
            raise LookupError(f"engine {self.backend!r} registered no loader")
        module, _, attr = self.loader.partition(":")
        loader: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return loader

    def hint(self) -> str:
        if self.install_hint:
            return self.install_hint
        return f"pip install 'voxfit[{self.extra}]'" if self.extra else ""
