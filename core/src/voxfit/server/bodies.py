"""Request bodies: read with a size cap, validated by pydantic models, uploads into private files.

No body is parsed before its size is known to be within the cap, and no
field is ever taken as a path: a reference clip arrives as an upload and is
copied into a private temporary directory within the size and length limits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional, Union

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from voxfit.errors import UsageError, one_line
from voxfit.options import validate_options
from voxfit.server.errors import ApiError
from voxfit.server.state import ServerState
from voxfit.server.voices import Voice

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
    instructions: Optional[str] = None  # accepted; no voxfit engine takes spoken-style instructions


Scalar = Union[str, int, float, bool, None]


class TtsBody(_Body):
    """voxfit's ``POST /v1/tts`` body: every option ``voxfit run`` has."""

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
    return _parse_json(await _read_body(request, cap), model)


def _parse_json(raw: bytes, model: type[BaseModel]) -> Any:
    """A request body as ``model``: empty, not JSON or not valid each a 400 with one line."""
    if not raw.strip():
        raise ApiError(400, "the body is empty: send a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {one_line(exc).split(': ', 1)[-1]}") from None
    return _parse(model, data)


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


# -- uploads ------------------------------------------------------------------


async def _save_upload(upload: Any, state: ServerState) -> tuple[Path, Path]:
    """Copy an uploaded clip into a private temporary directory, within the size and duration limits."""
    import soundfile

    limit = state.settings.max_upload_bytes
    folder = Path(tempfile.mkdtemp(prefix="voxfit-upload-"))  # mode 0700, a name the client never sees
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
                    raise ApiError(413, f"reference_audio is over {limit} bytes (VOXFIT_MAX_UPLOAD_BYTES)",
                                   param="reference_audio")
                out.write(block)
        try:
            info = await run_in_threadpool(soundfile.info, str(raw))
        except Exception:  # noqa: BLE001 - libsndfile says only that it cannot read it
            raise ApiError(400, "reference_audio is not audio libsndfile can read (send WAV, FLAC, OGG or MP3)",
                           param="reference_audio") from None
        if info.duration > state.settings.max_reference_seconds:
            raise ApiError(400, f"reference_audio is {info.duration:.1f} s long; at most "
                           f"{state.settings.max_reference_seconds:g} s (VOXFIT_MAX_REFERENCE_SECONDS)",
                           param="reference_audio")
        named = folder / f"reference.{str(info.format).lower()}"
        os.replace(raw, named)
        return folder, named
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


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
    return _parse_json(raw, TtsBody)


async def _form_body(request: Request, state: ServerState) -> tuple[TtsBody, Any]:
    """A multipart /v1/tts body: the same fields as the JSON one, plus the reference_audio file."""
    cap = state.settings.max_upload_bytes + 256 * 1024
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"the body is {int(declared)} bytes; at most {cap} with an upload "
                       "(VOXFIT_MAX_UPLOAD_BYTES)")
    seen = {"n": 0}
    receive = request.receive

    async def capped() -> Any:
        message = await receive()
        if message["type"] == "http.request":
            seen["n"] += len(message.get("body", b""))
            if seen["n"] > cap:
                raise ApiError(413, f"the body is over {cap} bytes (VOXFIT_MAX_UPLOAD_BYTES)")
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
