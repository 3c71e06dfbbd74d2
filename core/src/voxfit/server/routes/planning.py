"""Each voice's plan, this machine's state while it speaks, and what a text would take."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from voxfit.server.bodies import EstimateBody, _json_body
from voxfit.server.routes import State

router = APIRouter()

#: Characters of English speech per second, for estimates before a voice has spoken.
_CHARS_PER_SECOND = 14.0


@router.get("/v1/plan")
async def plan(s: State) -> dict[str, Any]:
    follow = s.follower.as_dict() if s.follower is not None else {"window_seconds": 0, "replans": []}
    return s.shown({"voices": {n: s.voices[n].plan.model_dump(mode="json") for n in s.order}, "load_follow": follow})


@router.get("/v1/system")
async def system(s: State) -> dict[str, Any]:
    sampled: dict[str, Any] = await run_in_threadpool(s.sampler().sample)
    return dict(s.shown(sampled))


@router.post("/v1/estimate")
async def estimate(request: Request, s: State) -> dict[str, Any]:
    body = await _json_body(request, EstimateBody, s.json_cap)
    voice = s.voice(body.voice)
    text = s.check_text(body.text, "text")
    spoken = s.totals[voice.name]
    chosen = voice.sessions[0].loaded.proposal
    if spoken.characters > 0 and spoken.audio_seconds > 0:
        per_char, rtf = spoken.audio_seconds / spoken.characters, spoken.synthesis_seconds / spoken.audio_seconds
        basis = f"measured on the {spoken.characters} characters this voice has spoken since start"
    else:
        per_char, rtf = 1.0 / _CHARS_PER_SECOND, chosen.estimate.rtf
        basis = f"the plan's RTF estimate and ~{_CHARS_PER_SECOND:g} characters per second of speech"
    audio_s = len(text) * per_char
    pool = s.pools[voice.name]
    return {
        "voice": voice.name, "characters": len(text), "sentences": len(voice.sessions[0].chunks(text)),
        "audio_seconds": round(audio_s, 3), "synthesis_seconds": round(audio_s * rtf, 3) if rtf is not None else None,
        "rtf": rtf, "peak_memory_bytes": chosen.estimate.peak_memory_bytes,
        "queue": {"busy": pool.busy, "waiting": pool.waiting, "limit": pool.max_queue}, "basis": basis,
    }
