"""Health, readiness, metrics and the models list: what operators and OpenAI clients ask before speaking."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from voxfit.server.errors import ApiError
from voxfit.server.routes import State
from voxfit.server.state import ServerState

router = APIRouter()

#: Model names OpenAI clients send; accepted, and the voice picks the voice.
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


@router.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(s: State) -> JSONResponse:
    voices = {}
    reasons = []
    for name, pool in s.pools.items():
        dead = pool.dead_reason
        voices[name] = {"ready": dead is None, "workers": len(pool.workers), "in_service": len(pool.live),
                        "busy": pool.busy, "waiting": pool.waiting}
        dead_workers = [w.dead for w in pool.workers if w.dead]
        if dead_workers:
            voices[name]["out_of_service"] = dead_workers
        if dead is not None:
            reasons.append(f"voice {name} is out of service: {dead}")
    if s.draining:
        reasons.insert(0, "the server is shutting down")
    ok = not reasons
    return JSONResponse({"ready": ok, "reasons": reasons, "voices": voices}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(s: State) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(s.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def models_list(s: ServerState) -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": s.started, "owned_by": "voxfit",
             "voxfit": s.voices[name].summary()} for name in s.order]
    data += [{"id": name, "object": "model", "created": s.started, "owned_by": "voxfit",
              "voxfit": {"note": "accepted for OpenAI clients: `voice` picks the voice"}} for name in OPENAI_MODELS]
    return {"object": "list", "data": data}


@router.get("/v1/models")
async def models(s: State) -> dict[str, Any]:
    return models_list(s)


@router.get("/v1/models/{model_id}")
async def model(model_id: str, s: State) -> dict[str, Any]:
    for entry in models_list(s)["data"]:
        if entry["id"] == model_id:
            return entry
    raise ApiError(404, f"no model {model_id!r}: see GET /v1/models", param="model", code="model_not_found")
