"""The HTTP API: OpenAI's speech endpoint, ttsfw's own route, and the service routes.

Every answer that is not audio is JSON; every error is one line in OpenAI's
shape (``{"error": {"message", "type", "param", "code"}}``), never a traceback.
Request bodies are read here, with a size cap, and validated by pydantic
models, so a wrong body is a 4xx that names the field. No route takes a path
from the client: reference audio arrives as an upload and goes to a private
temporary file that is removed when the request ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UsageError, one_line
from ..options import validate_options
from ..settings import Settings
from ..text import controls_to_spaces, has_speakable
from .encoding import FORMATS, NOT_OFFERED, Encoder, encode_whole, unavailable
from .errors import ApiError, error_body
from .metrics import ServerMetrics
from .page import PUBLIC, add_page
from .pool import BadInput, ClientGone, DeadlineExceeded, EngineFailed, Job, Rejected, VoicePool, Worker
from .voices import Voice

#: Model names OpenAI clients send; accepted, and the voice picks the voice.
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
#: Routes counted by name in the metrics (anything else is "other").
ROUTES = ("/health", "/ready", "/metrics", "/v1/models", "/v1/audio/voices", "/v1/audio/speech", "/v1/tts",
          "/v1/plan", "/v1/system", "/v1/estimate", "/", "/v1/requests/recent")
#: Characters of English speech per second, for estimates before a voice has spoken.
_CHARS_PER_SECOND = 14.0


# -- request bodies -----------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VoiceRef(_Body):
    id: str


class SpeechBody(_Body):
    """OpenAI's ``POST /v1/audio/speech`` body."""

    model: str = Field(min_length=1)
    input: str
    voice: Union[str, VoiceRef]
    response_format: str = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: Optional[str] = None  # accepted; no ttsfw engine takes spoken-style instructions


Scalar = Union[str, int, float, bool, None]


class TtsBody(_Body):
    """ttsfw's ``POST /v1/tts`` body: every option ``ttsfw run`` has."""

    text: str
    voice: Optional[str] = None
    format: str = "wav"
    stream: bool = False
    stream_format: Literal["audio", "sse"] = "audio"
    speed: Optional[float] = Field(default=None, ge=0.25, le=4.0)
    speaker: Optional[Union[int, str]] = None
    length_scale: Optional[float] = None
    noise_scale: Optional[float] = None
    noise_w_scale: Optional[float] = None
    sentence_silence: Optional[float] = None
    seed: Optional[int] = None
    reference_text: Optional[str] = None
    options: dict[str, Scalar] = Field(default_factory=dict)


class EstimateBody(_Body):
    text: str
    voice: Optional[str] = None


_NAMED_OPTIONS = ("speaker", "length_scale", "noise_scale", "noise_w_scale", "sentence_silence", "seed",
                  "reference_text")


def _validation_message(exc: ValidationError) -> tuple[str, Optional[str]]:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown parameter {where!r}", where
    if err["type"] == "missing":
        return f"{where} is required", where
    return f"{where or 'body'}: {err['msg']}", where or None


def _parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = _validation_message(exc)
        raise ApiError(400, message, param=param) from None


async def _read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"the body is {int(declared)} bytes; this route takes at most {cap}")
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise ApiError(413, f"the body is over {cap} bytes, the most this route takes")
        parts.append(chunk)
    return b"".join(parts)


async def _json_body(request: Request, model: type[BaseModel], cap: int) -> Any:
    body = await _read_body(request, cap)
    if not body.strip():
        raise ApiError(400, "the body is empty: send a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {one_line(exc).split(': ', 1)[-1]}") from None
    return _parse(model, data)


# -- server state -------------------------------------------------------------


class ServerState:
    """Everything the routes share: voices, their pools, limits, metrics."""

    def __init__(self, voices: list[Voice], settings: Settings, metrics: ServerMetrics,
                 system_host: Any = None) -> None:
        self.voices = {v.name: v for v in voices}
        self.order = [v.name for v in voices]
        self.settings = settings
        self.metrics = metrics
        self.aliases = dict(settings.voice_aliases)
        for voice in voices:
            for alias in voice.aliases:
                self.aliases.setdefault(alias, voice.name)
        self.pools = {
            v.name: VoicePool(v.name, [Worker(v.name, i, s) for i, s in enumerate(v.sessions)], settings.max_queue)
            for v in voices
        }
        for pool in self.pools.values():
            metrics.watch_pool(pool)
        self.draining = False
        self.started = int(time.time())
        self.formats_missing = {**NOT_OFFERED, **unavailable()}
        self.measured: dict[str, list[float]] = {v.name: [0.0, 0.0, 0.0] for v in voices}  # chars, audio s, synth s
        self.jobs: dict[str, Job] = {}  # admitted and not yet recorded, for the drain's bound
        self.system_host = system_host if system_host is not None else voices[0].sessions[0].host
        self._sampler: Any = None

    def drain(self) -> None:
        self.draining = True
        for pool in self.pools.values():
            pool.draining = True

    def in_flight(self) -> int:
        return sum(p.busy + p.waiting for p in self.pools.values())

    def cancel_all(self) -> None:
        """Stop every running job at its next sentence (the drain's bound has passed)."""
        for job in list(self.jobs.values()):
            job.cancel.set()
            if job.gone is not None and job.loop is not None:
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(job.gone.set)

    def close(self) -> None:
        """Stop every job at its next sentence and wait for the workers, before the engines are closed."""
        self.cancel_all()
        for pool in self.pools.values():
            for worker in pool.workers:
                worker.executor.shutdown(wait=True, cancel_futures=True)

    def voice(self, name: Optional[str]) -> Voice:
        if name is None:
            return self.voices[self.order[0]]
        target = self.aliases.get(name, name)
        if target in self.voices:
            return self.voices[target]
        aliases = f" (aliases: {', '.join(f'{a}={t}' for a, t in sorted(self.aliases.items()))})" if self.aliases else ""
        raise ApiError(400, f"unknown voice {name!r}: this server offers {', '.join(self.order)}{aliases}",
                       param="voice", code="voice_not_found")

    def format(self, name: str, param: str) -> Any:
        key = name.strip().lower()
        if key in FORMATS and key not in self.formats_missing:
            return FORMATS[key]
        offered = ", ".join(f for f in FORMATS if f not in self.formats_missing)
        why = self.formats_missing.get(key, f"unknown format {name!r}")
        raise ApiError(400, f"{why}; formats offered: {offered}", param=param, code="unsupported_format")

    def sampler(self) -> Any:
        if self._sampler is None:
            from .system import SystemSampler

            self._sampler = SystemSampler(self.system_host)
        return self._sampler

    def check_text(self, text: str, param: str) -> str:
        limit = self.settings.max_input_chars
        if len(text) > limit:
            raise ApiError(400, f"{param} is {len(text)} characters; this server takes at most {limit} per request "
                           "(TTSFW_MAX_INPUT_CHARS)", param=param, code="input_too_long")
        if not text.strip():
            raise ApiError(400, f"{param} is empty: nothing to say", param=param)
        text = controls_to_spaces(text)
        if not has_speakable(text):
            raise ApiError(400, f"{param} has nothing speakable in it (no letters or digits)", param=param)
        return text


# -- options ------------------------------------------------------------------


def _is_path_field(annotation: Any) -> bool:
    text = str(annotation)
    return "Path" in text


def voice_options(voice: Voice, given: dict[str, Any], speed: Optional[float]) -> dict[str, Any]:
    """The request's voice options, checked against the engine's registered options model (400 on error)."""
    model = voice.options_model
    backend = voice.sessions[0].loaded.proposal.engine
    fields = model.model_fields if model is not None else {}
    given = {k: v for k, v in given.items() if v is not None}
    for name in given:
        if name not in fields:
            takes = ", ".join(n for n in fields if not _is_path_field(fields[n].annotation)) or "none"
            raise ApiError(400, f"option {name!r} does not apply to voice {voice.name} (engine {backend}; "
                           f"it takes: {takes})", param=name)
        if _is_path_field(fields[name].annotation):
            raise ApiError(400, f"option {name!r} names a file, and this server never opens a path a client "
                           "names: upload the file instead (multipart field of that name on /v1/tts)", param=name)
    if speed is not None and speed != 1.0:
        if "speed" in fields:
            given["speed"] = speed
        elif "length_scale" in fields:
            if "length_scale" in given:
                raise ApiError(400, "give speed or length_scale, not both", param="speed")
            given["length_scale"] = 1.0 / speed
        else:
            raise ApiError(400, f"voice {voice.name} (engine {backend}) has no speed control; send speed 1.0",
                           param="speed")
    try:
        validate_options(backend, model, given)
    except UsageError as exc:
        raise ApiError(400, str(exc).replace("--", ""), param=next(iter(given), None)) from None
    return given


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
    out = {"X-Request-Id": job.id, "X-Ttsfw-Sample-Rate": str(rate), "X-Ttsfw-Voice": job.voice}
    values = {
        "Audio-Seconds": m.audio_seconds, "Rtf": m.rtf, "Time-To-First-Audio": m.time_to_first_audio_seconds,
        "Queue-Wait": job.queue_wait, "Synthesis-Seconds": m.synthesis_seconds,
        "Total-Seconds": (job.finished or time.perf_counter()) - job.arrived,
    }
    out.update({f"X-Ttsfw-{k}": f"{v:.4f}" for k, v in values.items() if v is not None})
    if m.peak_rss_bytes:
        out["X-Ttsfw-Peak-Rss-Bytes"] = str(m.peak_rss_bytes)
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
            err = ApiError(504, f"request timed out after {job.timeout:g} s (TTSFW_REQUEST_TIMEOUT), {waited:.1f} s "
                           f"of it {where}", code="timeout")
            self.record("timeout", 504, err.message)
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
        except (Rejected, DeadlineExceeded, BadInput, EngineFailed) as exc:
            raise self._error(exc) from None
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc) from None
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
            if self.mode == "whole" or not self.fmt.streams or self._recorded:
                await chunks.aclose()
        rate = self.voice.sample_rate
        if self.mode == "whole" or not self.fmt.streams:
            body, out_rate = await run_in_threadpool(encode_whole, self.fmt, rate, b"".join(pcm))
            self.record("ok", 200)
            if self.mode == "sse":
                return StreamingResponse(self._sse_whole(body), media_type="text/event-stream",
                                         headers={"X-Request-Id": job.id, "Cache-Control": "no-cache"})
            return Response(body, media_type=self.fmt.media_type, headers=_metrics_headers(job, out_rate))
        encoder = Encoder(self.fmt, rate)
        headers = {"X-Request-Id": job.id, "X-Ttsfw-Sample-Rate": str(encoder.rate), "X-Ttsfw-Voice": job.voice,
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
        except ClientGone:
            pass
        finally:
            await chunks.aclose()
            self.record(outcome, status, error)

    async def _audio_stream(self, encoder: Encoder, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        with contextlib.suppress(DeadlineExceeded, EngineFailed, BadInput):  # the stream just ends; the log says why
            async for data in self._stream(encoder, first, chunks):
                yield data

    async def _sse_stream(self, encoder: Encoder, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        try:
            async for data in self._stream(encoder, first, chunks):
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        except (DeadlineExceeded, EngineFailed, BadInput) as exc:
            status = 504 if isinstance(exc, DeadlineExceeded) else 500 if isinstance(exc, EngineFailed) else 400
            message = f"timed out after {self.job.timeout:g} s" if isinstance(exc, DeadlineExceeded) else str(exc)
            yield _sse({"type": "error", **error_body(status, message)})
            return
        yield _sse(self._done_event())

    async def _sse_whole(self, body: bytes) -> AsyncIterator[bytes]:
        yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(body).decode()})
        yield _sse(self._done_event())

    def _done_event(self) -> dict[str, Any]:
        chars = len(self.job.text)
        # ttsfw's engines have no text tokens: usage counts characters, so billing by it stays meaningful.
        return {"type": "speech.audio.done", "usage": {"input_tokens": chars, "output_tokens": 0,
                                                        "total_tokens": chars},
                "ttsfw": _job_summary(self.job)}


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


# -- uploads ------------------------------------------------------------------


async def _save_upload(upload: Any, state: ServerState) -> tuple[Path, Path]:
    """Copy an uploaded clip into a private temporary directory, within the size and duration limits."""
    import soundfile

    limit = state.settings.max_upload_bytes
    folder = Path(tempfile.mkdtemp(prefix="ttsfw-upload-"))  # mode 0700, a name the client never sees
    raw = folder / "reference"
    try:
        total = 0
        with open(raw, "wb") as out:
            while True:
                block = await upload.read(64 * 1024)
                if not block:
                    break
                total += len(block)
                if total > limit:
                    raise ApiError(413, f"reference_audio is over {limit} bytes (TTSFW_MAX_UPLOAD_BYTES)",
                                   param="reference_audio")
                out.write(block)
        try:
            info = await run_in_threadpool(soundfile.info, str(raw))
        except Exception:  # noqa: BLE001 - libsndfile says only that it cannot read it
            raise ApiError(400, "reference_audio is not audio libsndfile can read (send WAV, FLAC, OGG or MP3)",
                           param="reference_audio") from None
        if info.duration > state.settings.max_reference_seconds:
            raise ApiError(400, f"reference_audio is {info.duration:.1f} s long; at most "
                           f"{state.settings.max_reference_seconds:g} s (TTSFW_MAX_REFERENCE_SECONDS)",
                           param="reference_audio")
        named = folder / f"reference.{str(info.format).lower()}"
        os.replace(raw, named)
        return folder, named
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


# -- the app ------------------------------------------------------------------


class _Edge:
    """Pure ASGI middleware: the API key on every route but /health, and requests counted by route and status."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state
        key = state.settings.api_key
        self.key = key.encode() if key else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status = {"code": 500}

        async def counted_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.key is not None and path != "/health" and path not in PUBLIC and not self._authorized(scope):
                status["code"] = 401
                response = JSONResponse(
                    error_body(401, "missing or wrong API key: send Authorization: Bearer KEY", code="invalid_api_key"),
                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            await self.app(scope, receive, counted_send)
        finally:
            self.state.metrics.requests.labels(route, str(status["code"])).inc()

    def _authorized(self, scope: Any) -> bool:
        assert self.key is not None
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        token = token.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(token, self.key)


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="ttsfw", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ttsfw = state
    json_cap = max(64 * 1024, state.settings.max_input_chars * 8)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in err["loc"])
        return JSONResponse(error_body(400, f"{where}: {err['msg']}"), status_code=400)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"internal error: {one_line(exc)}"), status_code=500)

    # -- service routes --

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        voices = {}
        reasons = []
        for name, pool in state.pools.items():
            dead = pool.dead_reason
            voices[name] = {"ready": dead is None, "workers": len(pool.workers), "in_service": len(pool.live),
                            "busy": pool.busy, "waiting": pool.waiting}
            dead_workers = [w.dead for w in pool.workers if w.dead]
            if dead_workers:
                voices[name]["out_of_service"] = dead_workers
            if dead is not None:
                reasons.append(f"voice {name} is out of service: {dead}")
        if state.draining:
            reasons.insert(0, "the server is shutting down")
        ok = not reasons
        return JSONResponse({"ready": ok, "reasons": reasons, "voices": voices}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": name, "object": "model", "created": state.started, "owned_by": "ttsfw",
                 "ttsfw": state.voices[name].summary()} for name in state.order]
        data += [{"id": name, "object": "model", "created": state.started, "owned_by": "ttsfw",
                  "ttsfw": {"note": "accepted for OpenAI clients: `voice` picks the voice"}} for name in OPENAI_MODELS]
        return {"object": "list", "data": data}

    @app.get("/v1/audio/voices")
    async def voices() -> dict[str, Any]:
        return {"voices": [state.voices[n].summary() for n in state.order], "aliases": state.aliases,
                "default": state.order[0],
                "formats": [f for f in FORMATS if f not in state.formats_missing]}

    @app.get("/v1/plan")
    async def plan() -> dict[str, Any]:
        return {"voices": {n: state.voices[n].plan.model_dump(mode="json") for n in state.order}}

    @app.get("/v1/system")
    async def system() -> dict[str, Any]:
        return await run_in_threadpool(state.sampler().sample)

    @app.post("/v1/estimate")
    async def estimate(request: Request) -> dict[str, Any]:
        body = await _json_body(request, EstimateBody, json_cap)
        voice = state.voice(body.voice)
        text = state.check_text(body.text, "text")
        chars, audio, synth = state.measured[voice.name]
        chosen = voice.sessions[0].loaded.proposal
        if chars > 0 and audio > 0:
            per_char, rtf = audio / chars, synth / audio
            basis = f"measured on the {int(chars)} characters this voice has spoken since start"
        else:
            per_char, rtf = 1.0 / _CHARS_PER_SECOND, chosen.estimate.rtf
            basis = f"the plan's RTF estimate and ~{_CHARS_PER_SECOND:g} characters per second of speech"
        audio_s = len(text) * per_char
        pool = state.pools[voice.name]
        return {
            "voice": voice.name, "characters": len(text), "sentences": len(voice.sessions[0].chunks(text)),
            "audio_seconds": round(audio_s, 3),
            "synthesis_seconds": round(audio_s * rtf, 3) if rtf is not None else None,
            "rtf": rtf, "peak_memory_bytes": chosen.estimate.peak_memory_bytes,
            "queue": {"busy": pool.busy, "waiting": pool.waiting, "limit": pool.max_queue},
            "basis": basis,
        }

    # -- speech --

    @app.post("/v1/audio/speech")
    async def openai_speech(request: Request) -> Response:
        body = await _json_body(request, SpeechBody, json_cap)
        offered = set(state.order) | set(state.aliases) | set(OPENAI_MODELS) | {"ttsfw"}
        if body.model not in offered:
            raise ApiError(400, f"unknown model {body.model!r}: use one of {', '.join(sorted(offered))}",
                           param="model", code="model_not_found")
        voice = state.voice(body.voice if isinstance(body.voice, str) else body.voice.id)
        text = state.check_text(body.input, "input")
        fmt = state.format(body.response_format, "response_format")
        options = voice_options(voice, {}, body.speed)
        return await speak(state, request, "/v1/audio/speech", voice, text, options, fmt, body.stream_format)

    @app.post("/v1/tts")
    async def native_tts(request: Request) -> Response:
        cleanup: Optional[Path] = None
        try:
            kind = request.headers.get("content-type", "").lower()
            if kind.startswith("multipart/form-data"):
                body, upload = await _form_body(request, state)
            else:
                body, upload = await _json_or_urlencoded(request, kind, json_cap), None
            voice = state.voice(body.voice)
            text = state.check_text(body.text, "text")
            fmt = state.format(body.format, "format")
            given = dict(body.options)
            for name in _NAMED_OPTIONS:
                value = getattr(body, name)
                if value is not None:
                    if name in given:
                        raise ApiError(400, f"{name} given both as a field and in options: keep one", param=name)
                    given[name] = value
            options = voice_options(voice, given, body.speed)
            if upload is not None:
                fields = voice.options_model.model_fields if voice.options_model is not None else {}
                if "reference_audio" not in fields:
                    raise ApiError(400, f"voice {voice.name} takes no reference_audio", param="reference_audio")
                cleanup, path = await _save_upload(upload, state)
                options["reference_audio"] = path
            elif "reference_text" in options:
                raise ApiError(400, "reference_text needs reference_audio (the clip it transcribes)",
                               param="reference_text")
            mode = body.stream_format if body.stream or body.stream_format == "sse" else "whole"
            response = await speak(state, request, "/v1/tts", voice, text, options, fmt, mode, cleanup)
            cleanup = None  # the request owns it now
            return response
        finally:
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)

    add_page(app, state)  # the page at / and its routes (page.py)
    return _Edge(app, state)  # type: ignore[return-value]


async def _json_or_urlencoded(request: Request, kind: str, cap: int) -> TtsBody:
    """JSON, or an urlencoded form (``curl -d text=...``); ``curl -d '{...}'`` sends JSON under the form's type."""
    raw = await _read_body(request, cap)
    if kind.startswith("application/x-www-form-urlencoded") and not raw.lstrip().startswith(b"{"):
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ApiError(400, "the form is not UTF-8") from None
        data: dict[str, Any] = {}
        for key, value in pairs:
            if key == "options":
                try:
                    data[key] = json.loads(value)
                except ValueError:
                    raise ApiError(400, "options must be a JSON object", param="options") from None
            else:
                data[key] = value
        return _parse(TtsBody, data)
    if not raw.strip():
        raise ApiError(400, "the body is empty: send a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {one_line(exc).split(': ', 1)[-1]}") from None
    return _parse(TtsBody, data)


async def _form_body(request: Request, state: ServerState) -> tuple[TtsBody, Any]:
    """A multipart /v1/tts body: the same fields as the JSON one, plus the reference_audio file."""
    cap = state.settings.max_upload_bytes + 256 * 1024
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"the body is {int(declared)} bytes; at most {cap} with an upload "
                       "(TTSFW_MAX_UPLOAD_BYTES)")
    seen = {"n": 0}
    receive = request.receive

    async def capped() -> Any:
        message = await receive()
        if message["type"] == "http.request":
            seen["n"] += len(message.get("body", b""))
            if seen["n"] > cap:
                raise ApiError(413, f"the body is over {cap} bytes (TTSFW_MAX_UPLOAD_BYTES)")
        return message

    try:
        form = await Request(request.scope, capped).form(max_files=1, max_fields=32)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body
        raise ApiError(400, f"the multipart body cannot be read: {one_line(exc).split(': ', 1)[-1]}") from None
    data: dict[str, Any] = {}
    upload = None
    for key, value in form.multi_items():
        if hasattr(value, "read") and hasattr(value, "filename"):
            if key != "reference_audio":
                raise ApiError(400, f"unexpected file field {key!r} (only reference_audio is an upload)", param=key)
            upload = value
        elif key == "options":
            try:
                data["options"] = json.loads(value)
            except ValueError:
                raise ApiError(400, "options must be a JSON object", param="options") from None
        else:
            data[key] = value
    return _parse(TtsBody, data), upload

