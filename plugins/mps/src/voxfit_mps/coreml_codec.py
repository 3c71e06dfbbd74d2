"""Fish Speech's codec decoder (modded DAC: codes -> waveform) as a Core ML ML program, cached.

Imported only when the Core ML codec proposal is loaded (torch, coremltools).

* The decoder is exported with ``torch.export`` at a fixed length of
  ``frames`` code frames and converted with coremltools to an ML program in
  fp16. A fixed length because coremltools cannot convert the decoder's
  dynamic padding (``NotImplementedError: Dynamic padding for n-dimensional
  tensors``); shorter inputs are padded on the right, which is exact because
  the decoder is causal (the tests check it against fish-speech's own
  ``codec.decode``).
* Before export: weight norm is folded into plain weights, bf16 rotary
  tables become fp32 (coremltools rejects bf16 constants), and the codebook
  clamp is written without in-place index assignment (coremltools cannot
  convert the integer ``select_scatter`` that fish-speech's version traces to).
  Output is unchanged.
* Two aten ops that coremltools 9.0 does not map under torch 2.13's naming
  (``__and__`` on booleans, ``alias``) are mapped to its own converters for
  ``bitwise_and`` and no-op.
* Cache: ``<cache_dir>/mps/coreml-codec/<sha256 of codec.pth>-<frames>f-fp16.mlpackage``,
  written to a temporary directory and renamed into place.
* Running the converted model needs macOS (coremltools' runtime,
  ``libcoremlpython``, exists only there); converting works on Linux too.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxfit.sdk import file_sha256

DEFAULT_FRAMES = 1024  # ~47.5 s of audio at 21.5 frames/s: longer than any 400-character chunk
DEPLOYMENT = "macOS13"


def cache_path(cache_dir: Path, codec_sha256: str, frames: int) -> Path:
    return Path(cache_dir) / "mps" / "coreml-codec" / f"{codec_sha256[:32]}-{frames}f-fp16.mlpackage"


def decoder_module(codec: Any) -> Any:
    """codes [1, n_codebooks, T] int -> waveform [1, 1, T * frame_length], convertible by coremltools."""
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    class CodecDecoder(nn.Module):
        def __init__(self, codec: Any) -> None:
            super().__init__()
            self.codec = codec

        def forward(self, codes: torch.Tensor) -> torch.Tensor:
            q = self.codec.quantizer
            # fish-speech's DownsampleResidualVectorQuantize.decode, without in-place index assignment
            semantic = torch.clamp(codes[:, :1], max=q.semantic_quantizer.codebook_size - 1)
            residual = torch.clamp(codes[:, 1:], max=q.quantizer.codebook_size - 1)
            z = q.semantic_quantizer.from_codes(semantic)[0] + q.quantizer.from_codes(residual)[0]
            return self.codec.decoder(q.upsample(q.post_module(z)))

    codec = codec.eval().float()
    for module in codec.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        elif hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.nn.utils.remove_weight_norm(module)
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.dtype == torch.bfloat16:
                module._buffers[name] = buffer.float()
    for p in codec.parameters():
        p.requires_grad_(False)
    return CodecDecoder(codec).eval()


def n_codebooks(codec: Any) -> int:
    return 1 + int(codec.quantizer.quantizer.n_codebooks)


def _map_missing_ops() -> None:
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    for name, func in (("__and__", ops.bitwise_and), ("alias", ops.noop)):
        if name not in _TORCH_OPS_REGISTRY.name_to_func_mapping:
            _TORCH_OPS_REGISTRY.set_func_by_name(func, name)


def convert(codec: Any, destination: Path, frames: int = DEFAULT_FRAMES) -> Path:
    """Export and convert the decoder; write the .mlpackage to `destination` atomically."""
    import coremltools as ct
    import torch

    decoder = decoder_module(codec)
    example = torch.zeros(1, n_codebooks(codec), frames, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(decoder, (example,), strict=False).run_decompositions({})
        _map_missing_ops()
        mlmodel = ct.convert(
            program,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT),
        )
    mlmodel.short_description = f"Fish Speech codec decoder: {n_codebooks(codec)} x {frames} codes -> waveform"
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=destination.parent))
    try:
        mlmodel.save(str(staging / destination.name))
        if destination.exists():
            shutil.rmtree(destination)
        (staging / destination.name).rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


@dataclass
class Converted:
    path: Path
    converted_now: bool
    frames: int
    n_codebooks: int
    frame_length: int


def load_or_convert(codec: Any, codec_file: Path, cache_dir: Path, frames: int = DEFAULT_FRAMES) -> Converted:
    """The cached ML program for this codec.pth, converting it on first use."""
    path = cache_path(cache_dir, file_sha256(cache_dir, codec_file), frames)
    fresh = not path.exists()
    if fresh:
        convert(codec, path, frames)
    return Converted(path, fresh, frames, n_codebooks(codec), int(codec.frame_length))


class CoreMLDecoder:
    """Runs the converted decoder (macOS only): codes [n_codebooks, T] -> float32 waveform."""

    def __init__(self, converted: Converted, compute_units: str = "ALL") -> None:
        import coremltools as ct

        self.converted = converted
        self.model = ct.models.MLModel(str(converted.path), compute_units=getattr(ct.ComputeUnit, compute_units))
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name

    def __call__(self, codes: Any) -> Any:
        import numpy as np

        codes = np.asarray(codes, dtype=np.int32)
        frames, fl = self.converted.frames, self.converted.frame_length
        pieces = []
        for start in range(0, codes.shape[-1], frames):
            window = codes[:, start:start + frames]
            used = window.shape[-1]
            padded = np.zeros((codes.shape[0], frames), dtype=np.int32)
            padded[:, :used] = window  # right padding is exact: the decoder is causal
            out = self.model.predict({self.input_name: padded[None]})[self.output_name]
            pieces.append(np.asarray(out, dtype=np.float32).reshape(-1)[: used * fl])
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
