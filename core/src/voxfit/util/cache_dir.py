"""Where voxfit keeps its caches, worked out from the environment alone (no settings, no pydantic)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

PROJECT = "voxfit"
PREFIX = "VOXFIT_"


def cache_base(environ: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME, or ~/.cache. The XDG base directory spec: an empty or relative value is ignored, else an
    empty XDG_CACHE_HOME would put the caches in whatever directory voxfit runs from."""
    xdg = environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if os.path.isabs(xdg) else Path(os.path.expanduser("~")) / ".cache"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where the settings put the caches: VOXFIT_CACHE_DIR, else $XDG_CACHE_HOME/voxfit, else ~/.cache/voxfit."""
    given = environ.get(f"{PREFIX}CACHE_DIR", "")
    if given.strip():
        return Path(given).expanduser()
    return cache_base(environ) / PROJECT
