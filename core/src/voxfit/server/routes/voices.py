"""The voices this server offers, with the options each one's engine takes and how speed maps onto them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from voxfit.server.encoding import FORMATS
from voxfit.server.routes import State

router = APIRouter()


@router.get("/v1/audio/voices")
async def voices(s: State) -> dict[str, Any]:
    """Every voice, then every alias as an entry of its own (``alias_of`` names the voice it speaks as):
    Open WebUI builds its picker from the entries' ``id`` and ``name``."""
    entries = [s.voices[n].summary() for n in s.order]
    for alias, target in s.aliases.items():
        entries.append({**s.voices[target].summary(), "id": alias, "name": f"{alias} ({target})", "voice": alias,
                        "alias_of": target})
    return dict(s.shown({"voices": entries, "aliases": s.aliases, "default": s.order[0],
                         "formats": [f for f in FORMATS if f not in s.formats_missing]}))
