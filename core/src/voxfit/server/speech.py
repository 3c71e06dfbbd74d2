"""One speech request from admission to its last byte: whole, streamed audio, or SSE events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from voxfit.errors import one_line
from voxfit.server.encoding import Encoder, encode_whole
from voxfit.server.errors import ApiError, error_body
from voxfit.server.pool import BadInput, ClientGone, DeadlineExceeded, EngineFailed, Interrupted, Job, Rejected
from voxfit.server.state import ServerState
from voxfit.server.voices import Voice

# -- speaking -----------------------------------------------------------------


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Set the job's flags when the client disconnects (while its body is not being streamed)."""
    with contextlib.suppress(Exception):
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                job.cancel.set()
                assert job.gone is not None
                job.gone.set()
                return


def _metrics_headers(job: Job, rate: int) -> dict[str, str]:
    m = job.metrics
    out = {"X-Request-Id": job.id, "X-Voxfit-Sample-Rate": str(rate), "X-Voxfit-Voice": job.voice}
    values = {
        "Audio-Seconds": m.audio_seconds, "Rtf": m.rtf, "Time-To-First-Audio": m.time_to_first_audio_seconds,
        "Queue-Wait": job.queue_wait, "Synthesis-Seconds": m.synthesis_seconds,
        "Total-Seconds": (job.finished or time.perf_counter()) - job.arrived,
    }
    out.update({f"X-Voxfit-{k}": f"{v:.4f}" for k, v in values.items() if v is not None})
    if m.peak_rss_bytes:
        out["X-Voxfit-Peak-Rss-Bytes"] = str(m.peak_rss_bytes)
    return out


def _job_summary(job: Job) -> dict[str, Any]:
    m = job.metrics
    return {"id": job.id, "voice": job.voice, "characters": len(job.text), "audio_seconds": m.audio_seconds,
            "queue_wait_seconds": job.queue_wait, "time_to_first_audio_seconds": m.time_to_first_audio_seconds,
            "synthesis_seconds": m.synthesis_seconds, "rtf": m.rtf, "peak_rss_bytes": m.peak_rss_bytes,
            "engine": m.engine}


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


class Speaker:
    """One speech request from admission to its last byte, recorded exactly once."""

    def __init__(self, state: ServerState, request: Request, route: str, voice: Voice, text: str,
                 options: dict[str, Any], fmt: Any, mode: str, cleanup: Optional[Path] = None) -> None:
        self.state, self.request, self.route, self.voice = state, request, route, voice
        self.fmt, self.mode, self.cleanup = fmt, mode, cleanup  # mode: whole, audio or sse
        self.pool = state.pools[voice.name]
        self.job = Job(voice=voice.name, text=text, options=options, timeout=state.settings.request_timeout)
        self.job.gone = asyncio.Event()
        self.job.loop = asyncio.get_running_loop()
        self._recorded = False

    def record(self, outcome: str, status: int, error: str = "") -> None:
        if self._recorded:
            return
        self._recorded = True
        self.job.outcome = outcome
        if self.job.finished is None:
            self.job.finished = time.perf_counter()
        self.state.jobs.pop(self.job.id, None)
        if outcome == "ok":
            totals = self.state.measured[self.voice.name]
            totals[0] += len(self.job.text)
            totals[1] += self.job.metrics.audio_seconds
            totals[2] += self.job.metrics.synthesis_seconds
        self.state.metrics.finish(self.job, status, self.route, error)
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)

    def _error(self, exc: BaseException) -> ApiError:
        """The answer for a failure before any audio was sent; records it."""
        job = self.job
        if isinstance(exc, Rejected):
            self.state.metrics.rejected_request(job.voice, exc.reason)
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
            err = ApiError(503, str(exc), code=exc.reason, headers=headers)
            self.record("rejected", 503, str(exc))
        elif isinstance(exc, DeadlineExceeded):
            waited = job.queue_wait if job.queue_wait is not None else time.perf_counter() - job.arrived
            where = "in the queue" if job.started is None else "after waiting in the queue"
            err = ApiError(504, f"request timed out after {job.timeout:g} s (VOXFIT_REQUEST_TIMEOUT), {waited:.1f} s "
                           f"of it {where}", code="timeout")
            self.record("timeout", 504, err.message)
        elif isinstance(exc, Interrupted):
            err = ApiError(503, f"{exc}: the server is shutting down", code="draining",
                           headers={"Retry-After": "1"})
            self.record("cancelled", 503, err.message)
        elif isinstance(exc, BadInput):
            err = ApiError(400, str(exc))
            self.record("bad_input", 400, err.message)
        elif isinstance(exc, EngineFailed):
            err = ApiError(500, f"voice {job.voice}: {exc}", code="engine_error")
            self.record("engine_error", 500, err.message)
        else:
            err = ApiError(500, f"internal error: {one_line(exc)}")
            self.record("error", 500, err.message)
        return err

    async def respond(self) -> Response:
        job = self.job
        self.state.jobs[job.id] = job
        watcher = asyncio.ensure_future(_watch_disconnect(self.request, job))
        chunks = self.pool.run(job)
        try:
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                first = None
            if self.mode == "whole" or not self.fmt.streams:
                pcm = [first.pcm] if first is not None else []
                async for chunk in chunks:
                    pcm.append(chunk.pcm)
        except ClientGone:
            self.record("cancelled", 499, "the client disconnected")
            return Response(status_code=499)
        except (Rejected, DeadlineExceeded, Interrupted, BadInput, EngineFailed) as exc:
            raise self._error(exc) from None
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc) from None
        except asyncio.CancelledError:  # the server is stopping under this request
            self.record("cancelled", 499, "the request was cancelled")
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
            if self.mode == "whole" or not self.fmt.streams or self._recorded:
                await chunks.aclose()
        rate = self.voice.sample_rate
        if self.mode == "whole" or not self.fmt.streams:
            try:
                body, out_rate = await run_in_threadpool(encode_whole, self.fmt, rate, b"".join(pcm))
            except Exception as exc:  # noqa: BLE001 - libsndfile refused: a 500 with the reason
                raise self._error(exc) from None
            self.record("ok", 200)
            if self.mode == "sse":
                return StreamingResponse(self._sse_whole(body), media_type="text/event-stream",
                                         headers={"X-Request-Id": job.id, "Cache-Control": "no-cache"})
            return Response(body, media_type=self.fmt.media_type, headers=_metrics_headers(job, out_rate))
        encoder = Encoder(self.fmt, rate)
        headers = {"X-Request-Id": job.id, "X-Voxfit-Sample-Rate": str(encoder.rate), "X-Voxfit-Voice": job.voice,
                   "Cache-Control": "no-cache"}
        body = self._sse_stream(encoder, first, chunks) if self.mode == "sse" else \
            self._audio_stream(encoder, first, chunks)
        return _Stream(body, self._abandoned(chunks), media_type="text/event-stream" if self.mode == "sse"
                       else self.fmt.media_type, headers=headers)

    async def _abandoned(self, chunks: Any) -> None:
        """After the response, however it ended: a stream that never started (the client left first) is cancelled."""
        if not self._recorded:
            self.job.cancel.set()
            await chunks.aclose()
            self.record("cancelled", 499, "the client disconnected before the stream started")

    async def _stream(self, encoder: Encoder, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        """Encoded audio as made; records the outcome however the stream ends."""
        outcome, status, error = "cancelled", 200, "the client disconnected"
        try:
            head = encoder.header()
            data = head + (encoder.feed(first.pcm) if first is not None else b"")
            if data:
                yield data
            async for chunk in chunks:
                data = encoder.feed(chunk.pcm)
                if data:
                    yield data
            tail = encoder.finish()
            if tail:
                yield tail
            outcome, error = "ok", ""
        except DeadlineExceeded:
            outcome, error = "timeout", f"timed out after {self.job.timeout:g} s while streaming"
            raise
        except (EngineFailed, BadInput) as exc:
            outcome, error = ("engine_error" if isinstance(exc, EngineFailed) else "bad_input"), str(exc)
            raise
        except Interrupted as exc:
            outcome, error = "cancelled", f"{exc} (the server is shutting down)"
            raise
        except ClientGone:
            pass
        finally:
            await chunks.aclose()
            self.record(outcome, status, error)

    async def _audio_stream(self, encoder: Encoder, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        # Audio cut short must not look complete: the connection is dropped without the final chunk, so the
        # client sees an incomplete response (the log says why); see StreamAborted.
        try:
            async for data in self._stream(encoder, first, chunks):
                yield data
        except (DeadlineExceeded, EngineFailed, BadInput, Interrupted) as exc:
            raise StreamAborted(str(exc) or type(exc).__name__) from None

    async def _sse_stream(self, encoder: Encoder, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        try:
            async for data in self._stream(encoder, first, chunks):
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        except (DeadlineExceeded, EngineFailed, BadInput, Interrupted) as exc:
            status = (504 if isinstance(exc, DeadlineExceeded) else 500 if isinstance(exc, EngineFailed)
                      else 503 if isinstance(exc, Interrupted) else 400)
            message = f"timed out after {self.job.timeout:g} s" if isinstance(exc, DeadlineExceeded) else str(exc)
            yield _sse({"type": "error", **error_body(status, message)})
            return
        yield _sse(self._done_event())

    async def _sse_whole(self, body: bytes) -> AsyncIterator[bytes]:
        yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(body).decode()})
        yield _sse(self._done_event())

    def _done_event(self) -> dict[str, Any]:
        chars = len(self.job.text)
        # voxfit's engines have no text tokens: usage counts characters, so billing by it stays meaningful.
        return {"type": "speech.audio.done", "usage": {"input_tokens": chars, "output_tokens": 0,
                                                        "total_tokens": chars},
                "voxfit": _job_summary(self.job)}


class StreamAborted(Exception):
    """Raised out of an audio stream that cannot finish, so the server drops the connection mid-body.

    The request is already recorded with its reason; ``run.py`` keeps uvicorn from logging it as a crash.
    """


class _Stream(StreamingResponse):
    """A streaming response that runs ``on_close`` when it is done, also if its body never started."""

    def __init__(self, content: Any, on_close: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close


async def speak(state: ServerState, request: Request, route: str, voice: Voice, text: str,
                options: dict[str, Any], fmt: Any, mode: str, cleanup: Optional[Path] = None) -> Response:
    speaker = Speaker(state, request, route, voice, text, options, fmt, mode, cleanup)
    try:
        state.pools[voice.name].admit()
    except Rejected as exc:
        raise speaker._error(exc) from None
    return await speaker.respond()
