"""Shared by the Fish Speech tests: load the tiny checkpoint through the real loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import resolve
from voxfit.engines.fish import engine as fish_torch


def load(checkpoint: Path, clean: bool = True, **kw: Any) -> fish_torch.FishEngine:
    options: dict[str, Any] = dict(device="cpu", precision="fp32", quantization="none", compile=False, threads=1,
                                   max_new_tokens=16, seed=0)
    options.update(kw)
    engine = fish_torch.load_fish_engine(resolve(str(checkpoint)), **options)
    if clean:
        fish_torch.disable_training_artifacts(engine)
    return engine
