"""Fish Speech's codec (modded DAC + residual VQ): build, load, clean, wrap.

Imported only when a fish engine is built (it imports torch, hydra and
fish_speech). The codec is built from fish-speech's own packaged
``configs/modded_dac_vq.yaml`` with hydra ``instantiate`` and loaded from the
checkpoint's ``codec.pth`` — the same work fish-speech's ``dac.inference.load_model``
does, without that function's ``.project-root`` marker and lightning imports.

A ``codec.yaml`` beside ``codec.pth`` may change the packaged config's numeric
hyperparameters only (:mod:`voxfit.engines.fish.codec_config`: it never names a
class). ``codec.pth`` must match the built codec exactly: every weight, no
extra one, every shape; checked on a meta-device build before anything is
allocated.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from voxfit.engines.fish.codec_config import CODEC_YAML, merged_codec_tree, packaged_codec_yaml
from voxfit.sdk import ModelError

_NAMED = 3  # offenders named in a mismatch message


def codec_config(checkpoint: Path) -> tuple[Any, Path]:
    """The codec's OmegaConf config (packaged + validated overrides) and the file that shaped it."""
    from omegaconf import OmegaConf

    override = Path(checkpoint) / CODEC_YAML
    source = override if override.exists() else packaged_codec_yaml()
    return OmegaConf.create(merged_codec_tree(checkpoint)), source


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


def _named(names: list[str]) -> str:
    more = ", ..." if len(names) > _NAMED else ""
    return ", ".join(names[:_NAMED]) + more


def check_weights_match(
    weights: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path, config: str
) -> None:
    """One-line ModelError unless ``weights`` has exactly ``expected``'s names and shapes (both directions)."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{k} {list(weights[k].shape)} vs {list(expected[k].shape)}"
        for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    problems = [
        f"{len(found)} {label} ({_named(found)})"
        for label, found in (("missing weights", missing), ("unexpected weights", unexpected),
                             ("shape mismatches", shapes))
        if found
    ]
    if problems:
        raise ModelError(f"{path} does not match {config}: " + "; ".join(problems))


def build_codec(checkpoint: Path, device: Any = "cpu") -> tuple[nn.Module, Path]:
    """The codec fish-speech's classes build from the checkpoint's config (random weights) and that config's file."""
    from hydra.utils import instantiate

    cfg, source = codec_config(checkpoint)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore", FutureWarning)  # dac's torch.nn.utils.weight_norm deprecation
        try:
            return instantiate(cfg), source
        except Exception as exc:
            raise ModelError(f"cannot build the codec from {source} ({_first_line(exc)})") from None


def load_codec(checkpoint: Path, device: str, dtype: torch.dtype) -> nn.Module:
    """Build the codec from its config and load codec.pth, with every weight accounted for.

    The codec is returned as fish-speech leaves it after construction: in
    training mode, tracking gradients, with weight norm in place. Cleaning
    is :func:`voxfit.engines.fish.engine.disable_training_artifacts`' job.
    """
    weights = read_state_dict(checkpoint / "codec.pth")
    if any(k.startswith("generator.") for k in weights):  # a training checkpoint (same fix-up as fish-speech)
        weights = {k[len("generator."):]: v for k, v in weights.items() if k.startswith("generator.")}
    shape, source = build_codec(checkpoint, device="meta")  # names and shapes only: nothing allocated
    check_weights_match(weights, shape.state_dict(), checkpoint / "codec.pth", f"the codec config {source.name}")
    del shape
    codec, _ = build_codec(checkpoint)
    try:
        codec.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:  # checked above; kept as a last guard
        raise ModelError(f"{checkpoint / 'codec.pth'} does not fit {source.name} ({_first_line(exc)})") from None
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


class LatentDecoder(nn.Module):
    """The codec's convolutional decoder alone: latent [1, channels, L] -> waveform [1, 1, L * hop]; what
    the ONNX export runs. The latent comes from the quantizer (codes, codebook lookups and a transformer
    at the frame rate): ~3% of a decode, and the part that needs a long left context."""

    def __init__(self, codec: nn.Module) -> None:
        super().__init__()
        self.decoder = codec.decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)


def latent_per_frame(codec: nn.Module) -> int:
    """Latent samples per codec frame (the quantizer's upsampling): the decoder's input rate."""
    return int(math.prod(codec.quantizer.downsample_factor))


def decoder_context_frames(codec: nn.Module) -> int:
    """Frames of left context the convolutional decoder reads for one frame's audio: its receptive field,
    from its causal convolutions' kernels, dilations and strides (fish-speech's ``CausalConvNet`` and
    ``CausalTransConvNet``; every other layer is pointwise or a residual sum). A window decoded with this
    much latent context before its first frame gives that frame the one-shot decode's audio."""
    reach, scale = 0.0, 1.0  # left reach in latent samples; decoder samples per latent sample here
    for module in codec.decoder.modules():
        kind = type(module).__name__
        if kind == "CausalConvNet":  # output t reads inputs t * stride - (kernel - 1) onwards
            reach += (module.kernel_size - 1) / scale
            scale /= module.stride
        elif kind == "CausalTransConvNet":  # output t reads inputs down to ceil((t - k + 1) / s)
            reach += math.ceil((module.kernel_size - 1) / module.stride) / scale
            scale *= module.stride
    return math.ceil(reach / latent_per_frame(codec))


def frame_length(codec: nn.Module) -> int:
    return int(codec.frame_length)


def n_codebooks(codec: nn.Module) -> int:
    q = codec.quantizer
    return 1 + int(q.quantizer.n_codebooks)


def codebook_sizes(codec: nn.Module) -> tuple[int, int]:
    """(semantic codebook size, residual codebook size)."""
    q = codec.quantizer
    return int(q.semantic_quantizer.codebook_size), int(q.quantizer.codebook_size)
