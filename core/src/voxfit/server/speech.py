"""One speech request from admission to its last byte: whole, streamed audio, or SSE events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from voxfit.server.encoding import Encoder, encode_whole
from voxfit.server.errors import ApiError, error_body
from voxfit.server.lifecycle import OK, Outcome, SpeechRequest, outcome_of
from voxfit.server.pool import BadInput, ClientGone, DeadlineExceeded, EngineFailed, Interrupted, Job, Rejected
from voxfit.server.state import ServerState
from voxfit.server.voices import Voice

# -- speaking -----------------------------------------------------------------


async def _watch_disconnect(request: Request, life: SpeechRequest) -> None:
    """Stop the request when the client disconnects (while its body is not being streamed)."""
    with contextlib.suppress(Exception):
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                life.leave()
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
    """The HTTP side of one speech request: it only translates the lifecycle's audio and outcome into HTTP."""

    def __init__(self, request: Request, lifecycle: SpeechRequest, fmt: Any, mode: str) -> None:
        self.request, self.life, self.job = request, lifecycle, lifecycle.job
        self.fmt, self.mode = fmt, mode  # mode: whole, audio or sse

    def _error(self, exc: BaseException) -> ApiError:
        """The answer for a failure before any audio was sent; recorded by the lifecycle."""
        outcome = outcome_of(exc, self.job)
        self.life.finish(outcome)
        headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else {}
        code = None if outcome.name in ("bad_input", "error") else outcome.code
        return ApiError(outcome.status, outcome.message, code=code, headers=headers)

    async def respond(self) -> Response:
        watcher = asyncio.ensure_future(_watch_disconnect(self.request, self.life))
        chunks = self.life.audio()
        pcm: list[bytes] = []
        try:
            first = await _first(chunks)
            if self.mode == "whole" or not self.fmt.streams:
                pcm = [first.pcm] if first is not None else []
                async for chunk in chunks:
                    pcm.append(chunk.pcm)
        except ClientGone as exc:
            self.life.finish(outcome_of(exc, self.job))
            return Response(status_code=499)
        except ApiError:
            raise
        except asyncio.CancelledError:  # the server is stopping under this request
            self.life.finish(Outcome("cancelled", 499, "cancelled", "the request was cancelled"))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is mapped by the lifecycle, once
            raise self._error(exc) from None
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
            if self.mode == "whole" or not self.fmt.streams or self.life.recorded:
                await chunks.aclose()
        if self.mode == "whole" or not self.fmt.streams:
            return await self._whole(b"".join(pcm))
        return self._streamed(first, chunks)

    async def _whole(self, pcm: bytes) -> Response:
        try:
            body, out_rate = await run_in_threadpool(encode_whole, self.fmt, self.life.voice.sample_rate, pcm)
        except Exception as exc:  # noqa: BLE001 - the encoder refused: a 500 with the reason
            raise self._error(exc) from None
        self.life.finish(OK)
        if self.mode == "sse":
            return StreamingResponse(self._sse_whole(body), media_type="text/event-stream",
                                     headers={"X-Request-Id": self.job.id, "Cache-Control": "no-cache"})
        return Response(body, media_type=self.fmt.media_type, headers=_metrics_headers(self.job, out_rate))

    def _streamed(self, first: Any, chunks: AsyncIterator[Any]) -> Response:
        encoder = Encoder(self.fmt, self.life.voice.sample_rate)
        headers = {"X-Request-Id": self.job.id, "X-Voxfit-Sample-Rate": str(encoder.rate),
                   "X-Voxfit-Voice": self.job.voice, "Cache-Control": "no-cache"}
        body = self._sse_stream(encoder, first, chunks) if self.mode == "sse" else \
            self._audio_stream(encoder, first, chunks)
        return _Stream(body, self._abandoned(chunks), media_type="text/event-stream" if self.mode == "sse"
                       else self.fmt.media_type, headers=headers)

    async def _abandoned(self, chunks: Any) -> None:
        """After the response, however it ended: a stream that never started (the client left first) is cancelled."""
        if not self.life.recorded:
            self.job.cancel.set()
            await chunks.aclose()
            self.life.finish(Outcome("cancelled", 499, "client_gone",
                                     "the client disconnected before the stream started"))

    async def _stream(self, encoder: Encoder, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        """Encoded audio as made; the lifecycle records the outcome however the stream ends."""
        outcome = Outcome("cancelled", 200, "client_gone", "the client disconnected")
        try:
            data = encoder.header() + (encoder.feed(first.pcm) if first is not None else b"")
            if data:
                yield data
            async for chunk in chunks:
                data = encoder.feed(chunk.pcm)
                if data:
                    yield data
            tail = encoder.finish()
            if tail:
                yield tail
            outcome = OK
        except ClientGone:
            pass
        except (DeadlineExceeded, EngineFailed, BadInput, Interrupted) as exc:
            outcome = dataclasses.replace(outcome_of(exc, self.job, streaming=True), status=200)  # headers were sent
            raise
        finally:
            await chunks.aclose()
            self.life.finish(outcome)

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
            outcome = outcome_of(exc, self.job, streaming=True)
            yield _sse({"type": "error", **error_body(outcome.status, outcome.message)})
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


async def _first(chunks: AsyncIterator[Any]) -> Any:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


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
                options: Any, fmt: Any, mode: str, cleanup: Optional[Path] = None) -> Response:
    """One HTTP speech request, from admission to its last byte."""
    remove = (lambda: shutil.rmtree(cleanup, ignore_errors=True)) if cleanup is not None else None
    life = SpeechRequest(state, route, voice, text, options, cleanup=remove)
    speaker = Speaker(request, life, fmt, mode)
    try:
        life.admit()
    except Rejected as exc:
        raise speaker._error(exc) from None
    return await speaker.respond()
