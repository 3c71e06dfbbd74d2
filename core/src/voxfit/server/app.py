"""The HTTP app: the routers (one per concern, ``voxfit.server.routes``), the page, the edge, and errors.

Every answer that is not audio is JSON; every error is one line in OpenAI's
shape (``{"error": {"message", "type", "param", "code"}}``), never a traceback.
Request bodies are read with a size cap and validated by pydantic models, so a
wrong body is a 4xx that names the field. No route takes a path from the
client: a reference clip arrives as an upload and goes to a private temporary
file that is removed when the request ends.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxfit.errors import one_line
from voxfit.server.edge import ROUTES, Edge, key_matches, needs_key, unauthorized
from voxfit.server.errors import ApiError, error_body
from voxfit.server.page import add_page
from voxfit.server.routes import planning, service, speech, voices
from voxfit.server.speech import StreamAborted
from voxfit.server.state import ServerState

__all__ = ["ROUTES", "ServerState", "StreamAborted", "create_app", "key_matches", "needs_key", "unauthorized"]


def create_app(state: ServerState) -> Any:
    """The app for this server's state, behind its edge (API key, request counts)."""
    app = FastAPI(title="voxfit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.voxfit = state
    _errors(app)
    for routes in (service, voices, planning, speech):
        app.include_router(routes.router)
    add_page(app, state)  # the page at / and its routes (page.py)
    return Edge(app, state)


def _errors(app: FastAPI) -> None:
    """Every error as one line in OpenAI's shape."""

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
