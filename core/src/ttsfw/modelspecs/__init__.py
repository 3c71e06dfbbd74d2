"""Resolve what the user named (or nothing: the embedded voice) to a ModelSpec, without loading it.

Each family has a reader that recognises its on-disk layout from file names
and small config files only, so a plan can veto what will not fit before any
weights are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from ..errors import ModelError
from ..models import ModelSpec
from . import fish, piper

# Readers are tried in order; each returns None when the path is not its family.
READERS: list[Callable[[Path], Optional[ModelSpec]]] = [piper.read, fish.read]


def resolve(model: Optional[str]) -> ModelSpec:
    if not model:
        return piper.embedded_default()
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    for read in READERS:
        spec = read(path)
        if spec is not None:
            return spec
    raise ModelError(
        f"{path} is not a model ttsfw knows: expected a Piper voice (.onnx with its .onnx.json) "
        "or a Fish Speech checkpoint directory (config.json, model.pth, codec.pth)"
    )
