"""Engine adapter: Piper voices (VITS exported to ONNX) on ONNX Runtime.

Imported only when an engine is built (by a plugin's ``load_engine``):
onnxruntime, numpy and piper are imported inside the functions below. Piper
provides the phonemizer (espeak-ng) and the voice config; voxfit creates the
ONNX Runtime session itself, so the session options a plugin chose (threads,
graph optimisation, execution mode, memory planning) take effect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from pydantic import ValidationError
from voxfit.sdk import (
    AudioChunk,
    EngineLoadError,
    ProposalOptions,
    RebuildFailed,
    UsageError,
    load_or_rebuild,
    recorded_target,
)

from .proposal_options import CpuOptions

BACKEND = "piper-onnx"


class UnloadableModel(EngineLoadError):
    """The model file itself does not load (ONNX Runtime refuses it, or it is not a Piper graph)."""


_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_EXEC_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
def cpu_options(options: Any) -> CpuOptions:
    """The session options as this plugin's typed model (from a proposal, or a mapping another plugin passes);
    a wrong name or value is refused: a typo must not be silently ignored."""
    if isinstance(options, CpuOptions):
        return options
    given = options.model_dump() if isinstance(options, ProposalOptions) else dict(options or {})
    try:
        return CpuOptions.model_validate(given)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise EngineLoadError(f"{BACKEND}: session option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def session_options(threads: Optional[int], options: CpuOptions) -> Any:
    """Build onnxruntime.SessionOptions from a proposal's threads and options."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: warnings would break the one-line error contract
    if threads:
        so.intra_op_num_threads = int(threads)
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[options.graph_optimization_level])
    so.execution_mode = getattr(ort.ExecutionMode, _EXEC_MODES[options.execution_mode])
    if options.inter_op_threads:
        so.inter_op_num_threads = options.inter_op_threads
    if options.enable_mem_reuse is not None:
        so.enable_mem_reuse = options.enable_mem_reuse
    if options.enable_cpu_mem_arena is not None:
        so.enable_cpu_mem_arena = options.enable_cpu_mem_arena
    if options.enable_mem_pattern is not None:
        so.enable_mem_pattern = options.enable_mem_pattern
    if options.allow_spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    return so


class ShrinkingSession:
    """An ONNX Runtime session that gives its memory arena back once it has been idle for a moment.

    ONNX Runtime's CPU arena keeps the largest activations it ever held: one
    long sentence would pin hundreds of MiB for the life of a server. Arena
    shrinkage (a run option) frees what is not in use when a run ends, but the
    next run then takes its memory from the system again, a cost paid on
    every sentence if it shrank after each. So runs go as usual, and
    once no run has started for ``idle`` seconds one tiny run (the first
    phonemes of the last input) shrinks the arena: a busy server keeps its
    memory and its speed, a quiet one gives back what its peak took. Piper
    calls ``run`` and ``get_inputs``.
    """

    def __init__(self, ort: Any, session: Any, idle: float = 2.0) -> None:
        import threading

        self.session, self.idle = session, idle
        self.shrink = ort.RunOptions()
        self.shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._lock = threading.Lock()
        self._active = 0
        self._tiny: Optional[dict[str, Any]] = None  # a small input to shrink with, once a run has grown the arena
        self._timer: Any = None

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        with self._lock:
            self._active += 1
            if self._timer is not None:
                self._timer.cancel()
        try:
            return self.session.run(output_names, input_feed, run_options)
        finally:
            self._ended(input_feed)

    def _ended(self, feed: Any) -> None:
        import threading

        with self._lock:
            self._active -= 1
            self._tiny = _tiny_feed(feed) or self._tiny
            if self._active == 0 and self._tiny is not None:
                self._timer = threading.Timer(self.idle, self._give_back)
                self._timer.daemon = True
                self._timer.start()

    def _give_back(self) -> None:
        with self._lock:
            if self._active or self._tiny is None:
                return
            feed, self._tiny = self._tiny, None
        try:
            self.session.run(None, feed, self.shrink)
        except Exception:  # noqa: BLE001, S110 - memory not given back is no request's failure
            pass

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()


def _tiny_feed(feed: Any) -> Optional[dict[str, Any]]:
    """Piper's input cut to its first few phoneme ids: a run that costs milliseconds."""
    if not isinstance(feed, dict) or "input" not in feed or "input_lengths" not in feed:
        return None
    ids = feed["input"][:, :8]
    return {**feed, "input": ids, "input_lengths": feed["input_lengths"][:1] * 0 + ids.shape[1]}


class PiperOnnxEngine:
    """A Piper voice on an ONNX Runtime CPU session."""

    backend = BACKEND

    def __init__(self, voice: Any, model_path: Path, config_path: Path, load_seconds: float) -> None:
        self._voice = voice
        self.model_path = model_path
        self.config_path = config_path
        self.sample_rate = int(voice.config.sample_rate)
        self.load_seconds = load_seconds
        self.num_speakers = int(voice.config.num_speakers)
        self.speakers: dict[str, int] = dict(voice.config.speaker_id_map or {})
        self.speaker_id: Optional[int] = None
        self.length_scale: Optional[float] = None
        self.noise_scale: Optional[float] = None
        self.noise_w_scale: Optional[float] = None
        self.sentence_silence = 0.0
        self._spoken = False
        # ONNX Runtime's run() is thread-safe and Piper locks its phonemizer, so several requests can
        # share this engine (voxfit.engine.ConcurrentSynthesis); on a CPU, interleaving a few of them
        # keeps the cores busier than one at a time (docs/serving.md, "Under load").
        self.max_concurrent = max(2, min(8, 2 * (os.cpu_count() or 1)))
        # What happened while loading that a user should hear of (a cache entry rebuilt, a cache
        # that could not be written), kept for the run's report (`voxfit run` does not print them yet).
        self.notes: list[str] = []

    # -- voice parameters -------------------------------------------------

    def configure(self, options: Any) -> None:
        """Apply a complete set of voice options (a validated ``PiperOptions``); unset ones return to the
        voice's defaults, so one request's options never leak into the next."""
        given = options.model_dump(exclude_unset=True)
        speaker = given.get("speaker")
        self.speaker_id = self._speaker_id(speaker) if speaker is not None else None
        self.length_scale = given.get("length_scale")
        self.noise_scale = given.get("noise_scale")
        self.noise_w_scale = given.get("noise_w_scale")
        self.sentence_silence = float(given.get("sentence_silence") or 0.0)

    def _speaker_id(self, speaker: Union[str, int]) -> int:
        text = str(speaker).strip()
        if self.num_speakers <= 1:
            raise UsageError(f"voice {self.model_path.name} has a single speaker; --speaker does not apply")
        if text in self.speakers:
            return self.speakers[text]
        if text.isdigit() and int(text) < self.num_speakers:
            return int(text)
        names = ", ".join(sorted(self.speakers)[:8]) or "none"
        raise UsageError(
            f"unknown speaker {text!r}: voice {self.model_path.name} has ids 0-{self.num_speakers - 1} (names: {names})"
        )

    # -- the Engine protocol ----------------------------------------------

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        from piper import SynthesisConfig

        config = SynthesisConfig(
            speaker_id=self.speaker_id,
            length_scale=self.length_scale,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
        )
        silence = bytes(int(self.sample_rate * self.sentence_silence) * 2)
        for chunk in self._voice.synthesize(text, syn_config=config):
            pcm = chunk.audio_int16_bytes
            if not pcm:
                continue
            if self._spoken and silence:  # silence between sentences, never before the first
                pcm = silence + pcm
            self._spoken = True
            yield AudioChunk(pcm=pcm, sample_rate=self.sample_rate, text=text)

    def synthesize_with(self, text: str, options: Any, *, first: bool = True) -> Iterator[AudioChunk]:
        """``synthesize`` with one request's options, touching no engine state (safe from several threads)."""
        from piper import SynthesisConfig

        given = options.model_dump(exclude_unset=True) if options is not None else {}
        speaker = given.get("speaker")
        config = SynthesisConfig(
            speaker_id=self._speaker_id(speaker) if speaker is not None else None,
            length_scale=given.get("length_scale"),
            noise_scale=given.get("noise_scale"),
            noise_w_scale=given.get("noise_w_scale"),
        )
        silence = bytes(int(self.sample_rate * float(given.get("sentence_silence") or 0.0)) * 2)
        voice = self._voice
        if voice is None:
            raise UsageError(f"{BACKEND}: the engine is closed")
        spoken = not first
        for chunk in voice.synthesize(text, syn_config=config):
            pcm = chunk.audio_int16_bytes
            if not pcm:
                continue
            if spoken and silence:
                pcm = silence + pcm
            spoken = True
            yield AudioChunk(pcm=pcm, sample_rate=self.sample_rate, text=text)

    def inference_modules(self) -> tuple:
        return ()  # no torch modules: an ONNX graph has no training mode, dropout or gradients

    def close(self) -> None:
        self._voice = None


def _create_session(ort: Any, model_path: Path, so: Any, optimized: Optional[Path]) -> tuple[Any, list[str]]:
    """A session, through the cached optimised graph when one is given, and notes for the user.

    First use: optimise as usual and let ONNX Runtime save the result (to a
    temporary name, recorded and moved into place only once complete). Later
    uses: load the saved graph with optimisation off, which skips most of the
    start-up. A saved graph that is corrupt is remade once, with a note.
    """
    providers = ["CPUExecutionProvider"]
    if optimized is None:
        return ort.InferenceSession(str(model_path), sess_options=so, providers=providers), []
    level = so.graph_optimization_level

    def load_saved(path: Path) -> Any:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(path), sess_options=so, providers=providers)
        finally:
            so.graph_optimization_level = level  # a rebuild after a failed load optimises again

    def optimise_and_save(path: Path) -> Any:
        session = None
        try:
            with recorded_target(path) as tmp:
                so.optimized_model_filepath = str(tmp)
                session = ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
        except OSError as exc:  # a cache that cannot be written costs the start-up time, not the voice
            notes.append(f"could not cache the optimised graph at {path} ({exc.strerror or exc}); optimised in memory")
            if session is None:
                so.optimized_model_filepath = ""
                session = ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
        return session

    notes: list[str] = []
    session, rebuilt = load_or_rebuild(optimized, "cached optimised graph", load_saved, optimise_and_save)
    return session, rebuilt + notes


def load(
    model_path: Path,
    config_path: Path,
    threads: Optional[int] = None,
    options: Any = None,
    optimized_graph: Optional[Path] = None,
) -> PiperOnnxEngine:
    """Create the ONNX Runtime session with the proposal's options and wrap it with Piper's phonemizer.

    ``optimized_graph``: where the graph optimised for this CPU is cached
    (made on first use); None optimises in memory at every start.
    """
    import time

    chosen = cpu_options(options)
    t0 = time.perf_counter()
    try:
        import onnxruntime as ort
        from piper import PiperConfig, PiperVoice
    except ImportError as exc:
        raise EngineLoadError(f"{BACKEND} needs onnxruntime and piper-tts: {exc} (pip install 'voxfit[cpu-onnx]')") from None
    from voxfit.sdk import UnreadableFile, load_small_json

    try:
        config = PiperConfig.from_dict(load_small_json(Path(config_path)))
    except UnreadableFile as exc:
        raise EngineLoadError(f"voice config {config_path} {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EngineLoadError(f"voice config {config_path} unusable: {type(exc).__name__}: {exc}") from None
    so = session_options(threads, chosen)
    try:
        session, notes = _create_session(ort, Path(model_path), so, optimized_graph)
    except RebuildFailed as exc:
        raise EngineLoadError(str(exc)) from None
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnloadableModel(f"ONNX Runtime cannot load {model_path}: {first}") from None
    inputs = {i.name for i in session.get_inputs()}
    if not {"input", "input_lengths", "scales"} <= inputs:
        raise UnloadableModel(f"{model_path} is not a Piper voice (inputs: {', '.join(sorted(inputs))})")
    voice = PiperVoice(session=ShrinkingSession(ort, session) if chosen.shrink_arena else session, config=config)
    engine = PiperOnnxEngine(voice, Path(model_path), Path(config_path), time.perf_counter() - t0)
    engine.notes.extend(notes)
    return engine
