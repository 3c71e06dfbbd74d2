"""The voices this server offers, with the options each one's engine takes and how speed maps onto them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from voxfit.server.encoding import FORMATS
from voxfit.server.routes import State

router = APIRouter()


@router.get("/v1/audio/voices")
async def voices(s: State) -> dict[str, Any]:
    return {"voices": [s.voices[n].summary() for n in s.order], "aliases": s.aliases, "default": s.order[0],
            "formats": [f for f in FORMATS if f not in s.formats_missing]}
