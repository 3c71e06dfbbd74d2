"""What every HTTP request passes through first: the API key (every route but /health and the page) and
counting requests by route and status."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi.responses import JSONResponse

from voxfit.server.errors import error_body
from voxfit.server.page import PUBLIC
from voxfit.server.state import ServerState

#: Routes counted by name in the metrics (anything else is "other").
ROUTES = ("/health", "/ready", "/metrics", "/v1/models", "/v1/audio/voices", "/v1/audio/speech", "/v1/tts",
          "/v1/plan", "/v1/system", "/v1/estimate", "/", "/v1/requests/recent")


class Edge:
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
