"""Request bodies: read with a size cap, validated by pydantic models, uploads into private files.

No body is parsed before its size is known to be within the cap, and no
field is ever taken as a path: a reference clip arrives as an upload and is
copied into a private temporary directory within the size and length limits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional, Union

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from voxfit.errors import UsageError, one_line
from voxfit.server.client_input import InputRefused, parse_json
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


class TtsBody(BaseModel):
    """voxfit's ``POST /v1/tts`` body: the text, the voice, the format, and the voice's own options.

    Any option of the voice's engine may be given as a field of its own or in
    ``options``: the fields are not known here, they are the engine's
    (``GET /v1/audio/voices`` lists each voice's), and are checked against the
    engine's options model once the voice is known.
    """

    model_config = ConfigDict(extra="allow")

    text: str
    voice: Optional[str] = None
    format: str = "wav"
    stream: bool = False
    stream_format: Literal["audio", "sse"] = "audio"
    speed: Optional[float] = Field(default=None, ge=0.25, le=4.0)
    options: dict[str, Scalar] = Field(default_factory=dict)

    def voice_options(self) -> dict[str, Any]:
        """The engine options given, as fields or in ``options`` (one name twice is refused)."""
        given = dict(self.options)
        for name, value in (self.model_extra or {}).items():
            if name in given:
                raise ApiError(400, f"{name} given both as a field and in options: keep one", param=name)
            given[name] = value
        return given


class EstimateBody(_Body):
    text: str
    voice: Optional[str] = None


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
        data = parse_json(raw, "the body", max_bytes=len(raw))
    except InputRefused as exc:
        raise ApiError(400, str(exc)) from None
    return _parse(model, data)


def _options_field(value: str) -> Any:
    """The ``options`` field of a form: a JSON object, read as bounded as a body."""
    try:
        return parse_json(value, "options", max_bytes=len(value))
    except InputRefused as exc:
        raise ApiError(400, f"options must be a JSON object: {exc}", param="options") from None


# -- options ------------------------------------------------------------------


def file_options(voice: Voice) -> list[str]:
    """The voice's options that take a file (a reference clip): only an upload fills them."""
    model = voice.options_model
    fields = model.model_fields if model is not None else {}
    return [name for name, field in fields.items() if "Path" in str(field.annotation)]


def voice_options(voice: Voice, given: dict[str, Any], speed: Optional[float],
                  uploads: Optional[dict[str, Path]] = None) -> Any:
    """The request's options validated once for the voice's engine, with ``speed`` mapped through the
    engine's own pacing declaration; every mistake a 400 naming the option."""
    model = voice.options_model
    fields = model.model_fields if model is not None else {}
    given = {k: v for k, v in given.items() if v is not None}
    files = file_options(voice)
    for name in given:
        if name not in fields:
            takes = ", ".join(n for n in fields if n not in files) or "none"
            raise ApiError(400, f"option {name!r} does not apply to voice {voice.name} (engine {voice.engine}; "
                           f"it takes: {takes})", param=name)
        if name in files:
            raise ApiError(400, f"option {name!r} names a file, and this server never opens a path a client "
                           "names: upload the file instead (multipart field of that name on /v1/tts)", param=name)
    given.update(uploads or {})
    if speed is not None and speed != 1.0:
        given.update(_speed(voice, given, speed))
    try:
        return voice.options(given)
    except UsageError as exc:
        raise ApiError(400, str(exc), param=next(iter(given), None)) from None


def _speed(voice: Voice, given: dict[str, Any], speed: float) -> dict[str, Any]:
    pacing = voice.registry.pacing_for(voice.engine)
    if pacing is None:
        raise ApiError(400, f"voice {voice.name} (engine {voice.engine}) has no speed control; send speed 1.0",
                       param="speed")
    if pacing.length_option in given:
        raise ApiError(400, f"give speed or {pacing.length_option}, not both (speed sets "
                       f"{pacing.length_option} = 1 / speed)", param="speed")
    return pacing.for_speed(speed)


# -- uploads ------------------------------------------------------------------


async def _save_upload(upload: Any, state: ServerState, name: str) -> tuple[Path, Path]:
    """Copy an uploaded clip (for the option ``name``) into a private temporary directory, within the size and
    duration limits."""
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
                    raise ApiError(413, f"{name} is over {limit} bytes (VOXFIT_MAX_UPLOAD_BYTES)", param=name)
                out.write(block)
        try:
            info = await run_in_threadpool(soundfile.info, str(raw))
        except Exception:  # noqa: BLE001 - libsndfile says only that it cannot read it
            raise ApiError(400, f"{name} is not audio libsndfile can read (send WAV, FLAC, OGG or MP3)",
                           param=name) from None
        if info.duration > state.settings.max_reference_seconds:
            raise ApiError(400, f"{name} is {info.duration:.1f} s long; at most "
                           f"{state.settings.max_reference_seconds:g} s (VOXFIT_MAX_REFERENCE_SECONDS)",
                           param=name)
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
                data[key] = _options_field(value)
            else:
                data[key] = value
        return _parse(TtsBody, data)
    return _parse_json(raw, TtsBody)


async def _form_body(request: Request, state: ServerState) -> tuple[TtsBody, Any]:
    """A multipart /v1/tts body: the same fields as the JSON one, plus one file (an option that takes a clip):
    the body and (the file's field name, the upload), or None."""
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
            if upload is not None:
                raise ApiError(400, "one file per request", param=key)
            upload = (key, value)
        elif key == "options":
            data["options"] = _options_field(value)
        else:
            data[key] = value
    return _parse(TtsBody, data), upload
