"""OpenAI's speech endpoint and voxfit's own: each only turns its body into a voice, a text, options and a
format; the request's life is :mod:`voxfit.server.speech`'s."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response

from voxfit.server.bodies import (
    SpeechBody,
    _form_body,
    _json_body,
    _json_or_urlencoded,
    _save_upload,
    file_options,
    voice_options,
)
from voxfit.server.errors import ApiError
from voxfit.server.routes import State
from voxfit.server.routes.service import OPENAI_MODELS
from voxfit.server.speech import speak

router = APIRouter()


@router.post("/v1/audio/speech")
async def openai_speech(request: Request, s: State) -> Response:
    body = await _json_body(request, SpeechBody, s.json_cap)
    offered = set(s.order) | set(s.aliases) | set(OPENAI_MODELS) | {"voxfit"}
    if body.model not in offered:
        raise ApiError(400, f"unknown model {body.model!r}: use one of {', '.join(sorted(offered))}",
                       param="model", code="model_not_found")
    voice = s.voice(body.voice if isinstance(body.voice, str) else body.voice.id)
    text = s.check_text(body.input, "input")
    fmt = s.format(body.response_format, "response_format")
    options = voice_options(voice, {}, body.speed)
    return await speak(s, request, "/v1/audio/speech", voice, text, options, fmt, body.stream_format)


@router.post("/v1/tts")
async def native_tts(request: Request, s: State) -> Response:
    cleanup: Optional[Path] = None
    try:
        kind = request.headers.get("content-type", "").lower()
        if kind.startswith("multipart/form-data"):
            body, upload = await _form_body(request, s)
        else:
            body, upload = await _json_or_urlencoded(request, kind, s.json_cap), None
        voice = s.voice(body.voice)
        text = s.check_text(body.text, "text")
        fmt = s.format(body.format, "format")
        uploads: dict[str, Path] = {}
        if upload is not None:
            name, file = upload
            if name not in file_options(voice):
                raise ApiError(400, f"voice {voice.name} takes no file {name!r} (it takes: "
                               f"{', '.join(file_options(voice)) or 'none'})", param=name)
            cleanup, uploads[name] = await _save_upload(file, s, name)
        options = voice_options(voice, body.voice_options(), body.speed, uploads)
        mode = body.stream_format if body.stream or body.stream_format == "sse" else "whole"
        response = await speak(s, request, "/v1/tts", voice, text, options, fmt, mode, cleanup)
        cleanup = None  # the request owns it now
        return response
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
