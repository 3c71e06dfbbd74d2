"""The session: plan once, load once, speak many, and report everything that happened.

This is the one place that speaks. The CLI, the server, Wyoming and a Python
caller all use it; none of them plans, loads or measures on its own::

    import voxfit

    with voxfit.Session() as tts:                     # the embedded voice, the best way to run it here
        speech = tts.speak("Hello there.", length_scale=1.1)
        speech.save("hello.wav")
        print("\\n".join(speech.report.lines()))
        for chunk in tts.stream("A longer text. Spoken sentence by sentence."):
            player.write(chunk.pcm)

Voice options are validated against the chosen engine's registered options
model (``EngineInfo.options``) before anything is loaded, so a typo is a
one-line error, not a failed synthesis minutes later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from voxfit.engine import AudioChunk, ConcurrentSynthesis, Configurable, ReportsMetrics
from voxfit.errors import NoFeasiblePlan, UsageError
from voxfit.models import HardwareProfile, Plan, PluginProblem, Proposal
from voxfit.plugins import PluginHost
from voxfit.speaking.synthesis import Metrics, stream
from voxfit.speaking.text import split_sentences

if TYPE_CHECKING:  # pydantic-settings is imported only when the session has to read the settings itself
    from voxfit.settings import Settings


@dataclass
class Report:
    """Everything a run decided and did after the plan, for people (``lines``) and programs (``as_dict``)."""

    plan: Plan
    chosen: Proposal
    attempts: list[dict[str, Any]] = field(default_factory=list)
    env_applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    artifacts_disabled: list[str] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0
    metrics: Optional[Metrics] = None

    @property
    def fell_back(self) -> bool:
        return len(self.attempts) > 1

    def lines(self) -> list[str]:
        """What happened after the plan, one readable line each (the CLI prints these)."""
        out = [
            f"with {self.chosen.label()} (score {self.chosen.shown_score()})"
            + (f", after falling back from {len(self.attempts) - 1} proposal(s)" if self.fell_back else "")
        ]
        out += [f"  fell back: {a['proposal']}: {a['reason']}" for a in self.attempts if not a["ok"]]
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  cleaned: {action}" for action in self.artifacts_disabled]
        out += [f"  plugin problem: {p.plugin}.{p.hook}: {p.error}" for p in self.problems]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.label(),
            "attempts": self.attempts,
            "env_applied": self.env_applied,
            "notes": self.notes,
            "artifacts_disabled": self.artifacts_disabled,
            "problems": [p.model_dump(mode="json") for p in self.problems],
            "voice": {k: str(v) if isinstance(v, Path) else v for k, v in self.options.items()},
            "load_seconds": self.load_seconds,
            "metrics": self.metrics.as_dict() if self.metrics else None,
        }


@dataclass
class Speech:
    """The audio of one ``speak`` call: 16-bit mono PCM, its rate, and the report."""

    pcm: bytes
    sample_rate: int
    report: Report

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0

    def save(self, path: Path) -> Path:
        """Write a WAV file atomically (no partial file on failure)."""
        from voxfit.speaking.audio_io import AtomicWavWriter

        with AtomicWavWriter(Path(path), self.sample_rate) as writer:
            writer.write(self.pcm)
        return Path(path)


class _WithOptions:
    """A :class:`ConcurrentSynthesis` engine seen as a plain engine with one request's options bound."""

    def __init__(self, engine: Any, options: Any) -> None:
        self.engine, self.options, self._first = engine, options, True
        self.backend, self.sample_rate = engine.backend, engine.sample_rate

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        first, self._first = self._first, False
        return self.engine.synthesize_with(text, self.options, first=first)

    @staticmethod
    def around(engine: Any, options: Any) -> "_WithOptions":
        """The binding, reporting the engine's metrics where the engine reports them."""
        return (_WithOptionsReporting if isinstance(engine, ReportsMetrics) else _WithOptions)(engine, options)


class _WithOptionsReporting(_WithOptions):
    def metrics(self) -> dict[str, Any]:
        return dict(self.engine.metrics() or {})


class Session:
    """A planned, loaded engine that speaks many texts.

    :param model: a model reference (path) or None for the default model.
    :param device: ``auto`` or a device family: a hard constraint.
    :param options: default voice options for every ``speak`` (validated now).
    :param settings: complete settings; otherwise built from the environment,
        ``.env`` and ``overrides`` (``block_plugins=[...]``, ``strict=True``...).
    :param host: a ready plugin host (tests, embedding applications).
    :param plan: a plan already made with ``host``, made here otherwise (the CLI's plan cache;
        the server checks several plans' memory before loading any, and loads one plan into
        several sessions).
    :param started: ``time.perf_counter()`` when the caller's clock started, for time to first audio.
    """

    def __init__(
        self,
        model: Optional[str] = None,
        device: Optional[str] = None,
        *,
        options: Optional[dict[str, Any]] = None,
        settings: Optional[Settings] = None,
        host: Optional[PluginHost] = None,
        plan: Optional[Plan] = None,
        hardware: Optional[HardwareProfile] = None,
        started: Optional[float] = None,
        **overrides: Any,
    ) -> None:
        from voxfit.planning import planner
        from voxfit.speaking import load as runtime

        self.started = time.perf_counter() if started is None else started
        if settings is None:
            from voxfit.settings import load_settings

            settings = load_settings(model=model, device=device, **overrides)
        self.host = host or PluginHost.from_entry_points(settings)
        self.plan: Plan = plan if plan is not None else planner.make_plan(self.host, hardware=hardware)
        if self.plan.chosen is None:
            raise NoFeasiblePlan(self.plan.summary)
        self._given = dict(options or {})
        self._validate(self.plan.chosen, self._given)  # fail fast, before anything heavy is loaded
        t_load = time.perf_counter()
        self.loaded = runtime.load(self.host, self.plan)
        self._closed = False
        try:
            self.default_options = self._validate(self.loaded.proposal, self._given)
            self._configure(self.default_options)
        except BaseException:
            self.close()
            raise
        self.load_seconds = time.perf_counter() - t_load

    # -- options -----------------------------------------------------------

    @property
    def engine(self) -> Any:
        return self.loaded.engine

    @property
    def sample_rate(self) -> int:
        return int(self.engine.sample_rate)

    def options_schema(self) -> Optional[type]:
        """The chosen engine's voice options model (None: it takes none)."""
        return self.host.registry.options_for(self.loaded.proposal.engine)

    def _validate(self, proposal: Proposal, given: dict[str, Any]) -> Any:
        from voxfit.options import validate_options

        return validate_options(proposal.engine, self.host.registry.options_for(proposal.engine), given)

    def _configure(self, options: Any) -> None:
        if options is None:
            return
        if not isinstance(self.engine, Configurable):
            raise UsageError(f"engine {self.engine.backend} takes no voice options")
        self.engine.configure(options)

    def _options_for(self, request: dict[str, Any]) -> Any:
        """The session's defaults with this request's options on top, validated."""
        if not request:
            return self.default_options
        return self._validate(self.loaded.proposal, {**self._given, **request})

    def voice_options(self, request: dict[str, Any]) -> Any:
        """Validate a request's voice options once, on the way in (the session's defaults underneath); pass the
        result to :meth:`stream` as ``options``. A one-line ``UsageError`` names a wrong option."""
        return self._options_for(request)

    # -- speaking ----------------------------------------------------------

    def report(self, metrics: Optional[Metrics] = None, options: Any = None) -> Report:
        loaded = self.loaded
        chosen_options = options if options is not None else self.default_options
        if metrics is not None:
            metrics.load_seconds = self.load_seconds
        return Report(
            plan=self.plan,
            chosen=loaded.proposal,
            attempts=[{"proposal": a.proposal.label(), "ok": a.ok, "reason": a.reason} for a in loaded.attempts],
            env_applied=[c.describe() for c in loaded.env_applied],
            notes=list(loaded.notes),
            artifacts_disabled=list(loaded.artifacts_disabled),
            problems=list(loaded.problems),
            options=chosen_options.model_dump(exclude_unset=True) if chosen_options is not None else {},
            load_seconds=self.load_seconds,
            metrics=metrics,
        )

    def chunks(self, text: str) -> list[str]:
        """The sentence-sized pieces the engine will be handed."""
        return split_sentences(text, self.loaded.proposal.chunk_chars)

    def stream(
        self,
        text: str,
        *,
        metrics: Optional[Metrics] = None,
        on_chunk: Optional[Callable[[str], None]] = None,
        started: Optional[float] = None,
        clause_first: bool = False,
        validated: Any = None,
        **options: Any,
    ) -> Iterator[AudioChunk]:
        """Yield audio sentence by sentence as it is made; ``metrics`` (if given) is filled as it goes.

        Voice options come as keywords (validated here), or already validated by
        :meth:`voice_options` as ``validated`` (a server validates each request once, as it arrives).

        ``clause_first``: cut a long first sentence at a clause mark so that the
        first audio comes sooner (:mod:`voxfit.speaking.clauses`), for a listener who
        hears the stream as it comes. Closing the iterator early stops synthesis
        at the next audio chunk. With an engine that declares
        :class:`~voxfit.engine.ConcurrentSynthesis`, several threads may stream
        from one session at once.
        """
        if self._closed:
            raise UsageError("this session is closed")
        chosen = validated if validated is not None else self._options_for(options)
        metrics = metrics if metrics is not None else Metrics()
        chunks, pauses = self._chunks_for_stream(text, chosen, clause_first)
        if isinstance(self.engine, ConcurrentSynthesis):  # options per call: safe from several threads at once
            try:
                yield from stream(_WithOptions.around(self.engine, chosen), chunks, metrics,
                                  started=started, on_chunk=on_chunk, pauses=pauses)
            finally:
                if pauses:
                    metrics.chunks -= 1  # metrics count sentences: the clause cut made one sentence two chunks
            return
        self._configure(chosen)
        try:
            yield from stream(self.engine, chunks, metrics, started=started, on_chunk=on_chunk, pauses=pauses)
        finally:
            if pauses:
                metrics.chunks -= 1  # metrics count sentences: the clause cut made one sentence two chunks
            if chosen is not self.default_options:
                self._configure(self.default_options)  # the next request starts from the session's voice

    def _chunks_for_stream(self, text: str, options: Any, clause_first: bool) -> tuple[list[str], Any]:
        chunks = self.chunks(text)
        # The engine's pacing (EngineInfo.pacing) says which options set its pauses and its pace: where the
        # user set the engine's own sentence pauses, a cut inside a sentence would get one; the seam pad
        # voxfit puts there stretches with the pace.
        pacing = self.host.registry.pacing_for(self.loaded.proposal.engine)
        if not clause_first or (pacing is not None and pacing.sets_pauses(options)):
            return chunks, None
        from voxfit.speaking.clauses import SEAM_PAD_SECONDS, split_first_clause

        chunks, cut = split_first_clause(chunks)
        scale = pacing.time_scale(options) if pacing is not None else 1.0
        return chunks, ({0: SEAM_PAD_SECONDS * scale} if cut else None)

    def speak(self, text: str, **options: Any) -> Speech:
        """Speak a whole text; return its audio and the report."""
        metrics = Metrics()
        pcm = b"".join(chunk.pcm for chunk in self.stream(text, metrics=metrics, **options))
        chosen = self._options_for(options)
        return Speech(pcm=pcm, sample_rate=self.sample_rate, report=self.report(metrics, chosen))

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self.loaded.engine.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
