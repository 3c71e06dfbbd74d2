"""Fixtures shared by every test: an environment isolated from the developer's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A developer's TTSFW_* variables or .env must not change what tests see.
    for key in list(os.environ):
        if key.startswith("TTSFW_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TTSFW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
