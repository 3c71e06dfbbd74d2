"""The page at ``/`` and the few routes it needs beyond the API's own.

The page is static: ``static/index.html``, ``page.js`` and ``page.css``, shipped
in the package (no CDN, no framework, nothing fetched from outside). It speaks
through the same routes any client uses (``/v1/audio/voices``, ``/v1/plan``,
``/v1/system``, ``POST /v1/tts`` streamed as WAV), so it shows what the server
really does. It adds only what no route told:

* ``GET /v1/audio/voices/{voice}``: one voice's summary, its engine's options
  as a JSON schema (from the options model the engine registered), how
  ``speed`` maps onto them, what happened at load (fallbacks, environment
  changes made, training artifacts switched off) and the server's limits;
* ``GET /v1/requests/recent``: the last speech requests as the metrics
  recorded them (the same records as ``--metrics-log``), HTTP and Wyoming.

The page and its assets carry no data, so they are served without the API key
(the page asks for the key, then sends it on every API call).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Optional

from fastapi import FastAPI
from fastapi.responses import Response

from voxfit.server.errors import ApiError

#: Files the page is made of: name -> media type. Nothing else under /static/ is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
#: Paths served without the API key: the page and its assets (they hold no data).
PUBLIC = ("/", "/favicon.ico") + tuple(f"/static/{name}" for name in ASSETS)
#: Headers on every page asset: no framing by other sites, no sniffing, nothing loaded from elsewhere.
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


def _asset(name: str) -> bytes:
    return resources.files("voxfit.server").joinpath("static", name).read_bytes()


def _is_path_field(annotation: Any) -> bool:
    return "Path" in str(annotation)


def options_schema(model: Optional[type]) -> dict[str, Any]:
    """The options model's JSON schema, less the fields that name files (the page cannot send a path)."""
    if model is None:
        return {"type": "object", "properties": {}}
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    fields = model.model_fields  # type: ignore[attr-defined]
    files = [n for n, f in fields.items() if _is_path_field(f.annotation)]
    props = {k: v for k, v in schema.get("properties", {}).items() if k not in files}
    out = {**schema, "properties": props}
    if files:
        out["x-voxfit-uploads"] = files  # multipart uploads on /v1/tts, not offered by the page
    return out


def voice_details(state: Any, name: str) -> dict[str, Any]:
    voice = state.voice(name)
    session = voice.sessions[0]
    model = voice.options_model
    load = session.report().as_dict()
    load.pop("metrics", None)
    settings = state.settings
    return {
        **voice.summary(),
        "options_schema": options_schema(model),
        "load": load,
        "limits": {"max_input_chars": settings.max_input_chars, "max_queue": settings.max_queue,
                   "request_timeout_seconds": settings.request_timeout,
                   "workers": len(voice.sessions)},
    }


def add_page(app: FastAPI, state: Any) -> None:
    """Mount the page, its assets and its two routes on the API's app."""

    def asset(name: str) -> Response:
        return Response(_asset(name), media_type=ASSETS[name], headers=_HEADERS)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return asset("index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in ASSETS:
            raise ApiError(404, f"no page asset {name!r}")
        return asset(name)

    @app.get("/v1/audio/voices/{name}")
    async def voice(name: str) -> dict[str, Any]:
        return dict(state.shown(voice_details(state, name)))

    @app.get("/v1/requests/recent")
    async def recent(limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= 200:
            raise ApiError(400, "limit must be between 1 and 200", param="limit")
        records = list(state.metrics.recent)[-limit:]
        records.reverse()
        return {"requests": records}
