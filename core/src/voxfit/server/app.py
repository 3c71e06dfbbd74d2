"""The HTTP API: OpenAI's speech endpoint, voxfit's own route, and the service routes.

Every answer that is not audio is JSON; every error is one line in OpenAI's
shape (``{"error": {"message", "type", "param", "code"}}``), never a traceback.
Request bodies are read here, with a size cap, and validated by pydantic
models, so a wrong body is a 4xx that names the field. No route takes a path
from the client: reference audio arrives as an upload and goes to a private
temporary file that is removed when the request ends.
"""

from __future__ import annotations

import hmac
import shutil
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxfit.errors import one_line
from voxfit.server.bodies import (
    _NAMED_OPTIONS,
    EstimateBody,
    SpeechBody,
    _form_body,
    _json_body,
    _json_or_urlencoded,
    _save_upload,
    voice_options,
)
from voxfit.server.encoding import FORMATS
from voxfit.server.errors import ApiError, error_body
from voxfit.server.page import PUBLIC, add_page
from voxfit.server.speech import StreamAborted, speak
from voxfit.server.state import ServerState

__all__ = ["ServerState", "StreamAborted", "create_app", "voice_options"]

#: Model names OpenAI clients send; accepted, and the voice picks the voice.
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
#: Routes counted by name in the metrics (anything else is "other").
ROUTES = ("/health", "/ready", "/metrics", "/v1/models", "/v1/audio/voices", "/v1/audio/speech", "/v1/tts",
          "/v1/plan", "/v1/system", "/v1/estimate", "/", "/v1/requests/recent")
#: Characters of English speech per second, for estimates before a voice has spoken.
_CHARS_PER_SECOND = 14.0


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
            if self.key is not None and needs_key(path) and not key_matches(_authorization(scope), self.key):
                status["code"] = 401
                await unauthorized()(scope, receive, send)
                return
            await self.app(scope, receive, counted_send)
        finally:
            self.state.metrics.requests.labels(route, str(status["code"])).inc()


def needs_key(path: str) -> bool:
    """Every route needs the API key (when one is set) but /health and the page with its assets."""
    return path != "/health" and path not in PUBLIC


def key_matches(authorization: bytes, key: bytes) -> bool:
    """Whether an Authorization header value is ``Bearer KEY``, compared in constant time."""
    scheme, _, token = authorization.partition(b" ")
    token = token.strip() if scheme.lower() == b"bearer" else b""
    return hmac.compare_digest(token, key)


def unauthorized() -> JSONResponse:
    return JSONResponse(error_body(401, "missing or wrong API key: send Authorization: Bearer KEY",
                                   code="invalid_api_key"), status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _authorization(scope: Any) -> bytes:
    return next((value for name, value in scope.get("headers", []) if name == b"authorization"), b"")


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="voxfit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.voxfit = state
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
        data = [{"id": name, "object": "model", "created": state.started, "owned_by": "voxfit",
                 "voxfit": state.voices[name].summary()} for name in state.order]
        data += [{"id": name, "object": "model", "created": state.started, "owned_by": "voxfit",
                  "voxfit": {"note": "accepted for OpenAI clients: `voice` picks the voice"}} for name in OPENAI_MODELS]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        listed = await models()
        for entry in listed["data"]:
            if entry["id"] == model_id:
                return entry
        raise ApiError(404, f"no model {model_id!r}: see GET /v1/models", param="model", code="model_not_found")

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
        offered = set(state.order) | set(state.aliases) | set(OPENAI_MODELS) | {"voxfit"}
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


