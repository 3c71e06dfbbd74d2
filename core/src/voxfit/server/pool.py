"""Admission and execution: one bounded queue per voice, workers that each own a session.

Engines are not assumed thread-safe, so each worker owns one loaded
:class:`~voxfit.speaking.session.Session` and one thread, and runs one request at a time.
A request is admitted if a worker is idle or fewer than ``max_queue`` requests
wait; otherwise it is turned away at once (:class:`Overloaded`, answered 503
with Retry-After). Nothing waits unboundedly: a request's deadline starts when
it arrives, so its time in the queue counts, and a client that leaves is taken
out of the queue, or, once running, stopped at the next sentence boundary
(the session's stream is closed), which frees its worker.

Everything but the synthesis itself runs on the event loop, so the queue's
bookkeeping needs no locks; the worker thread reports back through
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional

from voxfit.engine import AudioChunk
from voxfit.errors import UsageError, one_line
from voxfit.speaking.synthesis import Metrics

_ids = itertools.count(1)


class Rejected(Exception):
    """Turned away before running: ``reason`` is a metrics label, ``retry_after`` seconds (or None)."""

    def __init__(self, message: str, reason: str, retry_after: Optional[int] = None) -> None:
        super().__init__(message)
        self.reason, self.retry_after = reason, retry_after


class Overloaded(Rejected):
    pass


class Unavailable(Rejected):
    pass


class DeadlineExceeded(Exception):
    pass


class ClientGone(Exception):
    pass


class Interrupted(Exception):
    """The server stopped this request before its text was done (the drain's bound passed)."""


class BadInput(Exception):
    """The engine refused this request's input (a UsageError): the client's fault, the worker is fine."""


class EngineFailed(Exception):
    """The engine raised: the request fails with 500 and the worker is out of service."""


@dataclass
class Job:
    """One request's synthesis: text, options, clocks, and the flags that stop it."""

    voice: str
    text: str
    options: Any  # the voice options, validated for the voice's engine as the request arrived (None: defaults)
    timeout: float
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    arrived: float = field(default_factory=time.perf_counter)
    metrics: Metrics = field(default_factory=Metrics)
    cancel: threading.Event = field(default_factory=threading.Event)  # read by the worker thread
    gone: Optional[asyncio.Event] = None  # set when the client disconnects, or the server stops the job
    stopped: bool = False  # the server stopped it (the drain's bound passed): not the client's leaving
    loop: Optional[asyncio.AbstractEventLoop] = None  # the loop ``gone`` belongs to (set from other threads)
    started: Optional[float] = None  # when a worker took it
    finished: Optional[float] = None
    outcome: str = "pending"  # ok, cancelled, timeout, engine_error, bad_input, rejected, error
    worker: str = ""

    def __post_init__(self) -> None:
        self.deadline = self.arrived + self.timeout

    @property
    def queue_wait(self) -> Optional[float]:
        return None if self.started is None else self.started - self.arrived

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()


class Worker:
    """A session and the one thread that drives it.

    An engine that declares ``ConcurrentSynthesis`` gets ``max_concurrent``
    workers sharing its one session; any other engine gets one.
    """

    def __init__(self, voice: str, index: int, session: Any) -> None:
        self.name = f"{voice}#{index}"
        self.session = session
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"voxfit-{voice}-{index}")
        self.dead: Optional[str] = None  # why it is out of service
        self.busy = False
        self.running_on: Any = None  # the session its current request runs on (it may have been swapped since)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


_DONE = object()


class VoicePool:
    """The queue and workers of one voice."""

    def __init__(self, voice: str, workers: list[Worker], max_queue: int,
                 on_event: Optional[Callable[[str, Job], None]] = None) -> None:
        self.voice = voice
        self.workers = workers
        self.max_queue = max_queue
        self._idle: collections.deque[Worker] = collections.deque(workers)
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self.running: set[str] = set()
        self.draining = False
        self._recent: collections.deque[float] = collections.deque(maxlen=20)  # service times, for Retry-After
        self.on_event = on_event or (lambda event, job: None)
        self._retired: list[tuple[Any, Callable[[], None]]] = []  # swapped-out sessions and how to close them

    # -- state -------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiting if not f.done())

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.busy)

    @property
    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.dead is None]

    @property
    def dead_reason(self) -> Optional[str]:
        """Why the voice cannot serve (every worker is out of service), else None."""
        if self.live:
            return None
        return self.workers[0].dead if self.workers else "no engine loaded"

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: the queue ahead, at the recent service time."""
        mean = sum(self._recent) / len(self._recent) if self._recent else 1.0
        ahead = self.waiting + self.busy
        return max(1, min(60, math.ceil(mean * ahead / max(1, len(self.live)))))

    # -- admission ---------------------------------------------------------

    def admit(self) -> None:
        """Raise :class:`Rejected` at once if this request cannot be queued."""
        if self.draining:
            raise Unavailable("the server is shutting down; retry on another instance", "draining",
                              self.retry_after())
        reason = self.dead_reason
        if reason is not None:
            raise Unavailable(f"voice {self.voice} is out of service: {reason}", "dead")
        if not self._idle and self.waiting >= self.max_queue:
            raise Overloaded(
                f"voice {self.voice} is busy: {self.busy} request(s) running and {self.waiting} waiting, "
                f"the queue's limit (VOXFIT_MAX_QUEUE={self.max_queue}); retry later", "queue_full",
                self.retry_after())

    async def _until(self, job: Job, fut: "asyncio.Future[Any]") -> Any:
        """``fut``'s result, unless the job's deadline passes or its client leaves first."""
        waits: set[asyncio.Future[Any]] = {fut}
        gone = asyncio.ensure_future(job.gone.wait()) if job.gone is not None else None
        if gone is not None:
            waits.add(gone)
        try:
            done, _ = await asyncio.wait(waits, timeout=max(0.0, job.remaining()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if gone is not None:
                gone.cancel()
        if fut in done:
            return fut.result()
        fut.cancel()
        if job.gone is not None and job.gone.is_set():
            if job.stopped:
                raise Interrupted("the server stopped this request before its text was done")
            raise ClientGone()
        raise DeadlineExceeded()

    async def acquire(self, job: Job) -> Worker:
        """Wait for a worker, within the job's deadline; FIFO among waiters."""
        self.admit()
        if self._idle and not self.waiting:
            worker = self._idle.popleft()
        else:
            fut: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
            self._waiting.append(fut)
            self.on_event("queued", job)
            try:
                worker = await self._until(job, fut)
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._release(fut.result())  # it was handed a worker as it gave up: pass it on
                else:
                    fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(fut)
                self.on_event("dequeued", job)
                raise
            self.on_event("dequeued", job)
        worker.busy = True
        job.started = time.perf_counter()
        job.worker = worker.name
        self.running.add(job.id)
        return worker

    def _release(self, worker: Worker) -> None:
        worker.busy = False
        if worker.dead is not None:
            if not self.live:  # nobody will serve the waiters: tell them now
                while self._waiting:
                    fut = self._waiting.popleft()
                    if not fut.done():
                        fut.set_exception(Unavailable(f"voice {self.voice} is out of service: {worker.dead}", "dead"))
            return
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(worker)
                return
        self._idle.append(worker)

    # -- running -----------------------------------------------------------

    async def run(self, job: Job) -> AsyncIterator[AudioChunk]:
        """Speak ``job`` on a worker and yield its audio as it is made.

        Raises :class:`Rejected`, :class:`DeadlineExceeded`, :class:`ClientGone`,
        :class:`Interrupted`, :class:`BadInput` or :class:`EngineFailed`. Closing the iterator early
        (or any of those) stops the worker at the next sentence boundary.
        """
        worker = await self.acquire(job)
        session = worker.running_on = worker.session
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        put = out.put_nowait

        def work() -> None:
            stopped = Interrupted("the server stopped this request before its text was done")
            try:
                if job.cancel.is_set():
                    loop.call_soon_threadsafe(put, stopped)
                    return
                chunks = session.stream(job.text, metrics=job.metrics, started=job.arrived,
                                               validated=job.options)
                cut = False
                try:
                    for chunk in chunks:
                        loop.call_soon_threadsafe(put, chunk)
                        if job.cancel.is_set():
                            cut = True
                            break
                finally:
                    chunks.close()  # stops synthesis; the session restores its default voice options
                # A consumer still waiting after a cut was stopped by the server (one that left or ran
                # out of time no longer reads): it must not take the cut for the end of the text.
                loop.call_soon_threadsafe(put, stopped if cut else _DONE)
            except UsageError as exc:
                loop.call_soon_threadsafe(put, BadInput(str(exc)))
            except BaseException as exc:  # noqa: BLE001 - an engine fault must not kill the thread silently
                reason = f"engine failed: {one_line(exc)}"
                for other in self.workers:  # every worker that shares this engine is out of service with it
                    if other.session is session:
                        other.dead = reason
                loop.call_soon_threadsafe(put, EngineFailed(reason))
            finally:
                job.finished = time.perf_counter()
                loop.call_soon_threadsafe(self._finished, worker, job)

        try:
            worker.executor.submit(work)
        except RuntimeError:  # the executor was shut down (the server is stopping)
            self._finished(worker, job)
            raise Unavailable("the server is shutting down", "draining", None) from None
        try:
            while True:
                item = await self._until(job, asyncio.ensure_future(out.get()))
                if item is _DONE:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            job.cancel.set()  # a no-op after _DONE; otherwise the worker stops at the next sentence

    def _finished(self, worker: Worker, job: Job) -> None:
        worker.running_on = None
        self._close_retired()
        self.running.discard(job.id)
        if job.started is not None and job.finished is not None:
            self._recent.append(job.finished - job.started)
        self._release(worker)

    # -- swapping engines ----------------------------------------------------

    def swap(self, replace: dict[int, Any], close: Callable[[Any], None]) -> None:
        """Point the workers at new sessions (``replace`` maps ``id(old)`` to its successor; call on the
        event loop). Requests already running finish on the old one, which ``close`` closes after them."""
        for old_id, new in replace.items():
            for worker in self.workers:
                if id(worker.session) == old_id:
                    old, worker.session, worker.dead = worker.session, new, None
                    if all(o is not old for o, _ in self._retired):
                        self._retired.append((old, lambda old=old: close(old)))
        self._close_retired()

    def _close_retired(self) -> None:
        for entry in list(self._retired):
            if all(w.running_on is not entry[0] for w in self.workers):
                self._retired.remove(entry)
                entry[1]()

    def close_retired_now(self) -> None:
        """Close every swapped-out session (the workers have stopped)."""
        while self._retired:
            self._retired.pop()[1]()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

