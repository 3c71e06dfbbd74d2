"""The synthesis loop and its metrics, for any engine.

RTF is synthesis wall time divided by the duration of the audio produced
(never estimated from word counts); time to first audio is measured from
when the caller started the clock (the command's start, so loading counts)
to the moment the first samples were handed to the writer.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Protocol

from voxfit.engine import AudioChunk, Engine, ReportsMetrics
from voxfit.errors import UsageError


class Sink(Protocol):
    def write(self, pcm: bytes) -> None: ...


def peak_rss_bytes() -> Optional[int]:
    """Peak resident memory of this process so far (ru_maxrss), or the current RSS where that is missing."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:
            return None


@dataclass
class Metrics:
    chunks: int = 0
    characters: int = 0
    audio_seconds: float = 0.0
    synthesis_seconds: float = 0.0
    load_seconds: Optional[float] = None
    time_to_first_audio_seconds: Optional[float] = None
    peak_rss_bytes: Optional[int] = None
    sample_rate: int = 0
    tokens: Optional[int] = None
    engine: dict = field(default_factory=dict)  # what the engine measured itself, e.g. GPU use during synthesis
    per_chunk_seconds: list[float] = field(default_factory=list)

    @property
    def rtf(self) -> Optional[float]:
        return self.synthesis_seconds / self.audio_seconds if self.audio_seconds > 0 else None

    @property
    def tokens_per_s(self) -> Optional[float]:
        if not self.tokens or self.synthesis_seconds <= 0:
            return None
        return self.tokens / self.synthesis_seconds

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("per_chunk_seconds")
        data["rtf"] = self.rtf
        data["tokens_per_s"] = self.tokens_per_s
        return data


def stream(
    engine: Engine,
    chunks: Iterable[str],
    metrics: Metrics,
    *,
    started: Optional[float] = None,
    on_chunk: Optional[Callable[[str], None]] = None,
    pauses: Optional[dict[int, float]] = None,
) -> Iterator[AudioChunk]:
    """Speak every chunk in order, yielding audio as soon as it exists and filling ``metrics``.

    ``started`` is a ``time.perf_counter()`` value for time to first audio
    (default: now). ``on_chunk`` is called after each text chunk (progress).
    ``pauses``: seconds of silence to yield after the chunk of that index (the
    seam of a sentence cut at a clause, see :mod:`voxfit.speaking.clauses`).
    When the generator is closed early (a client left), synthesis stops at the
    next audio chunk. Raises :class:`UsageError` if the whole text produced
    no audio at all.
    """
    metrics.sample_rate = engine.sample_rate
    t_start = time.perf_counter()
    started = t_start if started is None else started
    try:
        for text in chunks:
            t_chunk = time.perf_counter()
            for audio in engine.synthesize(text):
                if not audio.pcm:
                    continue
                if audio.sample_rate != engine.sample_rate:
                    raise UsageError(
                        f"engine {engine.backend} produced {audio.sample_rate} Hz audio, "
                        f"expected {engine.sample_rate} Hz"
                    )
                if metrics.time_to_first_audio_seconds is None:
                    metrics.time_to_first_audio_seconds = time.perf_counter() - started
                metrics.audio_seconds += audio.seconds
                if audio.tokens:
                    metrics.tokens = (metrics.tokens or 0) + audio.tokens
                yield audio
            pause = (pauses or {}).get(metrics.chunks, 0.0)
            if pause > 0 and metrics.time_to_first_audio_seconds is not None:
                silence = AudioChunk(pcm=bytes(int(engine.sample_rate * pause) * 2), sample_rate=engine.sample_rate)
                metrics.audio_seconds += silence.seconds
                yield silence
            metrics.per_chunk_seconds.append(time.perf_counter() - t_chunk)
            metrics.chunks += 1
            metrics.characters += len(text)
            if on_chunk is not None:
                on_chunk(text)
    finally:
        metrics.synthesis_seconds = time.perf_counter() - t_start
        metrics.peak_rss_bytes = peak_rss_bytes()
        if isinstance(engine, ReportsMetrics):
            metrics.engine = dict(engine.metrics() or {})
    if metrics.audio_seconds <= 0:
        raise UsageError("the text produced no audio: nothing in it could be spoken")


def synthesize(
    engine: Engine,
    chunks: Iterable[str],
    sink: Sink,
    *,
    started: Optional[float] = None,
    on_chunk: Optional[Callable[[str], None]] = None,
    pauses: Optional[dict[int, float]] = None,
) -> Metrics:
    """Speak every chunk in order into ``sink`` (see :func:`stream`); return the metrics."""
    metrics = Metrics()
    for audio in stream(engine, chunks, metrics, started=started, on_chunk=on_chunk, pauses=pauses):
        sink.write(audio.pcm)
    return metrics
