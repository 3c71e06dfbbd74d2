"""Fish Speech's codec (modded DAC + residual VQ): build, load, clean, wrap.

Imported only when a fish engine is built (it imports torch, hydra and
fish_speech). The codec is built from fish-speech's own packaged
``configs/modded_dac_vq.yaml`` with hydra ``instantiate`` and loaded from the
checkpoint's ``codec.pth`` — the same work fish-speech's ``dac.inference.load_model``
does, without that function's ``.project-root`` marker and lightning imports.

ttsfw extension: a ``codec.yaml`` beside ``codec.pth`` overrides the packaged
config. Published checkpoints (openaudio-s1-mini) have none and use the
packaged one; ttsfw's tiny test checkpoints carry one with shrunk dimensions.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ModelError

CODEC_YAML_OVERRIDE = "codec.yaml"


def fish_package_dir() -> Path:
    import fish_speech

    # fish_speech is a namespace package (no __init__.py, no __file__)
    return Path(list(fish_speech.__path__)[0])


def packaged_codec_yaml() -> Path:
    return fish_package_dir() / "configs" / "modded_dac_vq.yaml"


def codec_config(checkpoint: Path) -> tuple[Any, Path]:
    """The codec's OmegaConf config and the file it came from."""
    from omegaconf import OmegaConf

    override = checkpoint / CODEC_YAML_OVERRIDE
    source = override if override.is_file() else packaged_codec_yaml()
    try:
        return OmegaConf.load(source), source
    except Exception as exc:
        raise ModelError(f"{source} is not a readable codec config ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint file's state dict (memory-mapped); a one-line ModelError when it is not one."""
    try:
        weights = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except Exception as exc:  # zip/pickle errors of a truncated or foreign file
        raise ModelError(f"{path} is corrupt or not a torch checkpoint ({_first_line(exc)})") from None
    if isinstance(weights, dict) and "state_dict" in weights:
        weights = weights["state_dict"]
    if not isinstance(weights, dict) or not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelError(f"{path} is not a state dict of tensors")
    return weights


def load_codec(checkpoint: Path, device: str, dtype: torch.dtype) -> nn.Module:
    """Build the codec from its config and load codec.pth, with every weight accounted for.

    The codec is returned as fish-speech leaves it after construction: in
    training mode, tracking gradients, with weight norm in place. Cleaning
    is :func:`ttsfw.engines.fish_torch.disable_training_artifacts`' job.
    """
    from hydra.utils import instantiate

    cfg, source = codec_config(checkpoint)
    weights = read_state_dict(checkpoint / "codec.pth")
    if any(k.startswith("generator.") for k in weights):  # a training checkpoint (same fix-up as fish-speech)
        weights = {k[len("generator."):]: v for k, v in weights.items() if k.startswith("generator.")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # dac's torch.nn.utils.weight_norm deprecation
        try:
            codec = instantiate(cfg)
        except Exception as exc:
            raise ModelError(f"cannot build the codec from {source} ({_first_line(exc)})") from None
    try:
        result = codec.load_state_dict(weights, strict=False, assign=True)
    except RuntimeError as exc:  # size mismatches
        raise ModelError(
            f"{checkpoint / 'codec.pth'} does not fit the codec config {source.name} ({_first_line(exc)})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys, result.unexpected_keys
        raise ModelError(
            f"{checkpoint / 'codec.pth'} does not fit the codec config {source.name}: "
            f"{len(missing)} weights missing, {len(unexpected)} unexpected (e.g. {(missing + unexpected)[0]})"
        )
    return codec.to(device=device, dtype=dtype)


def strip_weight_norm(module: nn.Module) -> tuple[int, int]:
    """Fold weight norm into plain weights: (new-style parametrizations, old-style hooks) removed.

    The codec mixes both: fish-speech's causal convolutions use
    ``torch.nn.utils.parametrizations.weight_norm``, dac's ``WNConv1d`` in the
    residual VQ the deprecated hook. fish-speech's own ``remove_weight_norm()``
    is broken in 0.1.0 (it omits the tensor name). Output is unchanged.
    """
    new = old = 0
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            new += 1
        elif hasattr(m, "weight_g") and hasattr(m, "weight_v"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.nn.utils.remove_weight_norm(m)
            old += 1
    return new, old


class CodecDecoder(nn.Module):
    """codes [1, n_codebooks, T] (int64) -> waveform [1, 1, T * frame_length]: what the ONNX export runs."""

    def __init__(self, codec: nn.Module) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        z = self.codec.quantizer.decode(codes)
        return self.codec.decoder(z)


def frame_length(codec: nn.Module) -> int:
    return int(codec.frame_length)


def n_codebooks(codec: nn.Module) -> int:
    q = codec.quantizer
    return 1 + int(q.quantizer.n_codebooks)


def codebook_sizes(codec: nn.Module) -> tuple[int, int]:
    """(semantic codebook size, residual codebook size)."""
    q = codec.quantizer
    return int(q.semantic_quantizer.codebook_size), int(q.quantizer.codebook_size)
