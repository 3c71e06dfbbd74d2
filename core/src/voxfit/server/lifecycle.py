"""One speech request's life, the same for every protocol: admission, the job, its outcome, totals, metrics.

HTTP (``speech.py``) and Wyoming (``wyoming.py``) only translate: a request in
their shape becomes a :class:`SpeechRequest`, its audio goes out in their
shape, and however it ends, :func:`outcome_of` names the ending once, with the
status, code and message each protocol turns into its own answer (an HTTP
error body, a Wyoming ``error`` event). :meth:`SpeechRequest.finish` records
it exactly once: per-voice totals, Prometheus metrics, the request log.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional

from voxfit.errors import one_line
from voxfit.server.pool import (
    BadInput,
    ClientGone,
    DeadlineExceeded,
    EngineFailed,
    Interrupted,
    Job,
    Rejected,
)


@dataclass(frozen=True)
class Outcome:
    """How a request ended: ``name`` for metrics, ``status`` as HTTP says it, ``code`` for clients."""

    name: str  # ok, rejected, timeout, cancelled, bad_input, engine_error, error
    status: int
    code: str
    message: str
    retry_after: Optional[int] = None


OK = Outcome("ok", 200, "", "")


def outcome_of(exc: BaseException, job: Job, *, streaming: bool = False) -> Outcome:
    """The one mapping from a failure to an ending, for every protocol. ``streaming``: audio had been sent."""
    if isinstance(exc, Rejected):
        return Outcome("rejected", 503, exc.reason, str(exc), exc.retry_after)
    if isinstance(exc, DeadlineExceeded):
        if streaming:
            return Outcome("timeout", 504, "timeout", f"timed out after {job.timeout:g} s while streaming")
        waited = job.queue_wait if job.queue_wait is not None else time.perf_counter() - job.arrived
        where = "in the queue" if job.started is None else "after waiting in the queue"
        return Outcome("timeout", 504, "timeout", f"request timed out after {job.timeout:g} s "
                       f"(VOXFIT_REQUEST_TIMEOUT), {waited:.1f} s of it {where}")
    if isinstance(exc, Interrupted):
        return Outcome("cancelled", 503, "draining", f"{exc}: the server is shutting down", 1)
    if isinstance(exc, ClientGone):
        return Outcome("cancelled", 499, "client_gone", "the client disconnected")
    if isinstance(exc, BadInput):
        return Outcome("bad_input", 400, "bad_input", str(exc))
    if isinstance(exc, EngineFailed):
        return Outcome("engine_error", 500, "engine_error", str(exc) if streaming else f"voice {job.voice}: {exc}")
    return Outcome("error", 500, "internal_error", f"internal error: {one_line(exc)}")


@dataclass
class VoiceTotals:
    """What a voice has spoken since the server started (its successful requests): for estimates."""

    characters: int = 0
    audio_seconds: float = 0.0
    synthesis_seconds: float = 0.0

    def add(self, job: Job) -> None:
        self.characters += len(job.text)
        self.audio_seconds += job.metrics.audio_seconds
        self.synthesis_seconds += job.metrics.synthesis_seconds


class SpeechRequest:
    """One request on a voice's queue, recorded exactly once however it ends.

    ``options`` are the voice options already validated for the voice's engine;
    ``cleanup`` runs after the request is recorded (a reference clip's temporary
    directory, say).
    """

    def __init__(self, state: Any, route: str, voice: Any, text: str, options: Any,
                 cleanup: Optional[Callable[[], None]] = None) -> None:
        self.state, self.route, self.voice = state, route, voice
        self.pool = state.pools[voice.name]
        self.job = Job(voice=voice.name, text=text, options=options, timeout=state.settings.request_timeout)
        self.job.gone, self.job.loop = asyncio.Event(), asyncio.get_running_loop()
        self.cleanup = cleanup
        self.recorded = False

    def admit(self) -> None:
        """Raise :class:`Rejected` at once when the voice's queue cannot take it."""
        self.pool.admit()

    def audio(self) -> AsyncIterator[Any]:
        """The job's audio chunks as a worker makes them (raises what :meth:`VoicePool.run` raises)."""
        self.state.jobs[self.job.id] = self.job
        self.state.admitted += 1
        return self.pool.run(self.job)

    def leave(self) -> None:
        """The client left: the worker stops at the next sentence."""
        self.job.cancel.set()
        if self.job.gone is not None:
            self.job.gone.set()

    def finish(self, outcome: Outcome) -> None:
        """Record the ending once: totals for a success, metrics and the log line for every request."""
        if self.recorded:
            return
        self.recorded = True
        job = self.job
        job.outcome = outcome.name
        if job.finished is None:
            job.finished = time.perf_counter()
        self.state.jobs.pop(job.id, None)
        if outcome.name == "rejected":
            self.state.metrics.rejected_request(job.voice, outcome.code)
        if outcome.name == "ok":
            self.state.totals[self.voice.name].add(job)
        self.state.metrics.finish(job, outcome.status, self.route, outcome.message)
        if self.cleanup is not None:
            self.cleanup()
