"""Continuous batching: one thread steps every active request's sequence together.

Requests join at a step boundary (their prompt is run through a free slot of
the KV cache, alone), then advance one token per step with all the others,
and leave when they stop (end token or budget), fail, or are cancelled (a
client that left): the slot is free for the next step. At most ``slots``
requests decode at once; the rest wait in arrival order. Each request gets
its frames (codes for the codec) through its own queue while the sentence is
still being generated, a window's worth at a time (``Request.chunks``): a
reader woken for every frame would take the interpreter from the decode loop
hundreds of times a second per request, for nothing it can use.

A request whose prompt fails (too long for the model's context, say) fails
alone: the exception goes to its queue and the others go on. An exception in
a step that all requests share fails every request of that step, and the
thread goes on with the next ones.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from voxfit.engines.fish.batched import BatchedDecoder, NoiseSupply, Sampling, Sequence, noise_drawn_ahead

_END = object()


@dataclass(eq=False)  # a request is itself: never equal to another with the same fields
class Request:
    """One text's decoding: its prompt, budget and sampling, and the queue its frames arrive on."""

    prompt: Any  # tokens [K+1, T]
    audio_masks: Any
    audio_parts: Any
    budget: int
    sampling: Sampling
    #: how many new frames the reader wants at each wake-up, in order (its audio windows); None: each frame
    chunks: Optional[Iterator[int]] = None
    frames: "queue.Queue[Any]" = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    joined_at: Optional[float] = None  # when its prompt went through (perf_counter)
    batch_seen: int = 0  # the largest batch it decoded in
    seq: Optional[Sequence] = None
    wanted: int = 1  # frames to hold back until the reader has a use for them

    def __post_init__(self) -> None:
        if self.chunks is not None:
            self.wanted = next(self.chunks)

    def cancel(self) -> None:
        self.cancelled.set()

    def results(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """Frames [num_codebooks] as they come; raises what failed the request."""
        while True:
            item = self.frames.get(timeout=timeout)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item


class Batcher:
    """Drives a :class:`BatchedDecoder` from one thread; ``submit`` from any thread."""

    def __init__(self, decoder: BatchedDecoder, threads: Optional[int] = None) -> None:
        self.decoder, self.threads = decoder, threads
        self._waiting: collections.deque[Request] = collections.deque()
        self._active: list[Request] = []
        self._free = list(range(decoder.slots))
        self._wake = threading.Condition()
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._noise_ahead = noise_drawn_ahead(decoder.device)
        self._noise_wanted = threading.Event()  # a sequence used its last chunk of noise drawn ahead
        self.steps = 0
        self.largest_batch = 0
        #: called from the loop's thread when it runs out of sequences, before it waits for more
        self.on_idle: Optional[Callable[[], None]] = None

    @property
    def slots(self) -> int:
        return self.decoder.slots

    @property
    def busy(self) -> bool:
        """Whether a sequence is decoding or waiting to: the loop's thread has work for its core."""
        return bool(self._active or self._waiting)

    def submit(self, request: Request) -> Request:
        if self._noise_ahead and request.sampling.noise is None:
            request.sampling.noise = NoiseSupply(request.sampling.generator, self.decoder.noise_sizes,
                                                 wanted=self._noise_wanted.set)
            request.sampling.noise.fill()  # its first tokens' noise, drawn in the caller's thread
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher was closed")
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="voxfit-fish-batcher", daemon=True)
                self._thread.start()
                if self._noise_ahead:
                    threading.Thread(target=self._supply_noise, name="voxfit-fish-noise", daemon=True).start()
            self._wake.notify()
        return request

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        for request in list(self._waiting) + self._active:
            request.frames.put(RuntimeError("the engine was closed"))
        self._noise_wanted.set()  # the noise thread sees the batcher closed and ends

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                try:
                    if not self._next_round():
                        return
                    self._step()
                except Exception as exc:  # a fault of the loop itself: fail what is running, keep serving
                    self._fail_active(exc)

    def _supply_noise(self) -> None:
        """Keep a chunk of noise drawn ahead for every decoding sequence that used its last one
        (NoiseSupply): the draws run here, beside the step, with the interpreter's lock released."""
        while True:
            self._noise_wanted.wait()
            self._noise_wanted.clear()
            if self._closed:
                return
            for request in list(self._active):
                if request.sampling.noise is not None:
                    try:
                        request.sampling.noise.fill()
                    except Exception:  # the step draws it itself, and fails that request if it must
                        pass

    def _fail_active(self, exc: Exception) -> None:
        active, self._active = self._active, []
        for request in active:
            self._release(request, exc)

    def _next_round(self) -> bool:
        """Drop cancelled requests, admit waiting ones into free slots; False once closed."""
        with self._wake:
            if not self._closed and not self._waiting and not self._active and self.on_idle is not None:
                self.on_idle()
            while not self._closed and not self._waiting and not self._active:
                self._wake.wait()
            if self._closed:
                return False
            self._active = [r for r in self._active if not self._leave_if_cancelled(r)]
            admitted = []
            while self._waiting and self._free:
                request = self._waiting.popleft()
                if request.cancelled.is_set():
                    request.frames.put(_END)
                    continue
                admitted.append(request)
                request.seq = Sequence(slot=self._free.pop(), prompt_len=int(request.prompt.shape[1]),
                                       budget=request.budget, sampling=request.sampling)
        for request in admitted:
            self._join(request)
        return True

    def _leave_if_cancelled(self, request: Request) -> bool:
        if not request.cancelled.is_set():
            return False
        self._release(request, _END)
        return True

    def _release(self, request: Request, last: Any) -> None:
        if request.seq is not None:
            with self._wake:
                self._free.append(request.seq.slot)
        request.frames.put(last)

    def _join(self, request: Request) -> None:
        seq = request.seq
        assert seq is not None
        try:
            self.decoder.prefill(seq, request.prompt, request.audio_masks, request.audio_parts)
        except Exception as exc:  # this request's prompt: it fails alone
            self._release(request, exc)
            return
        request.joined_at = time.perf_counter()
        self._deliver(request)
        if seq.done:
            self._release(request, _END)
        else:
            self._active.append(request)
            self._noise_wanted.set()  # its prompt used the chunk drawn at submit: the noise thread draws the next

    def _step(self) -> None:
        live = [r for r in self._active if not r.cancelled.is_set()]
        if not live:
            return
        self.largest_batch = max(self.largest_batch, len(live))
        try:
            self.decoder.step([r.seq for r in live])  # type: ignore[misc]
        except Exception as exc:  # a shared step failed: every request in it fails, the thread goes on
            for request in live:
                self._release(request, exc)
            self._active = [r for r in self._active if r not in live]
            return
        self.steps += 1
        finished = []
        for request in live:
            request.batch_seen = max(request.batch_seen, len(live))
            self._deliver(request)
            if request.seq is not None and request.seq.done:
                finished.append(request)
        for request in finished:
            self._release(request, _END)
        self._active = [r for r in self._active if r not in finished]

    @staticmethod
    def _deliver(request: Request) -> None:
        """Hand the request's new frames to its reader once they make the window it waits for (all of
        them when the sequence is done)."""
        seq = request.seq
        assert seq is not None
        if not seq.codes or (len(seq.codes) < request.wanted and not seq.done):
            return
        request.frames.put(seq.codes)
        seq.codes = []
        if request.chunks is not None:
            request.wanted = next(request.chunks)


class CodecTurns:
    """Audio windows take turns on the codec: one at a time while the batch decodes, so its thread keeps
    a core of its own (every request waits on that loop), and up to ``idle`` at once when it has nothing
    to decode: requests that decoded together end together, and their last windows then have the cores
    to themselves. A response's last window goes before the others that wait: its client waits for
    nothing else, and its sequence's slot (or its client's next request) sits idle until it is out,
    while a window in mid-sentence is still ahead of its playback. Used as ``with turns.turn(last):``;
    the batch's loop calls :meth:`batch_went_idle` (a waiting window is woken by events, never by a
    timer: the interpreter's lock is the batch loop's, and a poll would take it hundreds of times a second)."""

    def __init__(self, batcher_busy: Callable[[], bool], idle: int) -> None:
        self._busy, self._idle = batcher_busy, max(1, idle)
        self._running = 0
        self._last_waiting = 0  # last windows waiting for a turn: the others let them go first
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def turn(self, last: bool = False) -> Iterator[None]:
        """Hold a turn on the codec for one window; ``last``: the response's final window."""
        self._enter(last)
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def batch_went_idle(self) -> None:
        """The batch has nothing to decode: windows waiting for a turn may now run side by side."""
        with self._changed:
            self._changed.notify_all()

    def _enter(self, last: bool) -> None:
        with self._changed:
            self._last_waiting += last
            try:
                while self._running >= (1 if self._busy() else self._idle) or (self._last_waiting and not last):
                    self._changed.wait()  # woken by a turn ending or the batch going idle
            finally:
                self._last_waiting -= last
                if last:  # the windows it held back may go beside it
                    self._changed.notify_all()
            self._running += 1
