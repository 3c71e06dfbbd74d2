"""Fixtures shared by every test: an environment isolated from the developer's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A developer's VOXFIT_* variables or .env must not change what tests see.
    for key in list(os.environ):
        if key.startswith("VOXFIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VOXFIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


# -- Fish Speech: one tiny checkpoint per session, built with fish-speech's own classes --------


@pytest.fixture(scope="session")
def fish_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight S1-layout checkpoint (config.json, model.pth, tokenizer, codec.pth); read-only."""
    import torch
    from voxfit.engines.fish.tiny import build_tiny_checkpoint

    torch.set_num_threads(1)  # CI has 2 cores; 1 thread is steady when another process is busy
    return build_tiny_checkpoint(tmp_path_factory.mktemp("fish") / "tiny-s1", seed=0)
