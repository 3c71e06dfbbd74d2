"""The Fish Speech codec's convolutional decoder (latent -> waveform) exported to ONNX and run on ONNX Runtime.

* The decoder alone: the quantizer before it (codes -> latent, codebook
  lookups and a transformer at the frame rate, ~3% of a decode) stays on
  torch, so that a streamed window can run the quantizer over its whole left
  context and the decoder over only the frames its convolutions read.
* Exported once with torch's dynamo exporter and a dynamic length axis (the
  legacy TorchScript exporter bakes the traced length into the causal
  padding and fails at any other length).
* Cached under ``<cache_dir>/fish-codec-onnx/<key>.onnx``; the key hashes
  ``codec.pth`` (and ``codec.yaml`` where present) with the torch, onnx and
  onnxscript versions. A cached file is remade only when ONNX Runtime cannot
  load it (truncated, garbage): once, with a note naming it. The exporter's
  scratch files stay in a private directory inside the cache.
* Trusted only after ONNX Runtime's output matches torch's on probe codes at
  two lengths, every time it is loaded: max abs difference at most
  :data:`TOLERANCE` (a 16-bit sample step is 3e-5; fp32 exports measured
  about 5e-8). Otherwise the engine keeps the torch decoder and says why.

Needs onnx, onnxscript and onnxruntime (``pip install 'voxfit-cpu-onnx[fish-onnx]'``).
The torch codec must already be in eval mode without weight norm.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

from voxfit.sdk import file_sha256, read_small_bytes

TOLERANCE = 1e-3
#: what the exported graph computes (in the cache key: a graph of another kind is never reused)
GRAPH = "latent-to-waveform"
PROBE_FRAMES = (7, 19)  # verification lengths, both different from the export's example length
EXPORT_FRAMES = 12


def cache_key(checkpoint: Path, cache: Path) -> str:
    import onnx
    import onnxscript
    import torch

    parts = [file_sha256(cache, checkpoint / "codec.pth")]
    override = checkpoint / "codec.yaml"
    if override.is_file():
        parts.append(hashlib.sha256(read_small_bytes(override)).hexdigest())
    parts += [f"torch={torch.__version__}", f"onnx={onnx.__version__}", f"onnxscript={onnxscript.__version__}",
              f"graph={GRAPH}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def export_decoder(codec: Any, path: Path, max_frames: int) -> None:
    """Export latent [1, channels, L] -> audio [1, 1, L * hop] with L dynamic (up to ``max_frames`` frames).

    The exporter works in a private temporary directory inside the cache (it may
    write external-data files beside its model); the finished files are moved
    into place, ``path`` itself last, and the directory is always removed.
    """
    import torch

    from voxfit.engines.fish.codec import LatentDecoder, latent_per_frame

    wrapper = LatentDecoder(codec).eval()
    with torch.inference_mode():
        example = codec.quantizer.decode(probe_codes(codec, EXPORT_FRAMES, seed=0)[None]).clone()
    per_frame = latent_per_frame(codec)
    length = torch.export.Dim("length", min=2, max=max(max_frames, EXPORT_FRAMES + 1) * per_frame)
    # the exporter prints progress to stdout and logs a warning per missing torchvision op
    # (torch.onnx's logger); none of it is actionable for a user: keep the CLI's output clean
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=".export-"))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, dynamic_shapes={"latent": {2: length}},
                input_names=["latent"], output_names=["audio"], verbose=False,
            )
            program.save(str(scratch / path.name))
        for produced in sorted(scratch.iterdir(), key=lambda p: p.name == path.name):  # the model last
            os.replace(produced, path.parent / produced.name)
    finally:
        exporter_log.setLevel(level)
        shutil.rmtree(scratch, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class OnnxCodecDecoder:
    """An ONNX Runtime session over the exported decoder, after the torch codec's quantizer."""

    def __init__(self, path: Path, threads: int, codec: Any) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # ORT runs once per sentence, between torch's token loops: threads that spin-wait after a run
        # would take the cores torch's generation needs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.quantizer = codec.quantizer

    def decode(self, codes: Any) -> Any:
        """codes [n_codebooks, T] (torch or numpy) -> float32 waveform."""
        import torch

        with torch.inference_mode():
            return self.decode_latent(self.quantizer.decode(torch.as_tensor(codes, dtype=torch.long)[None]))

    def decode_latent(self, latent: Any) -> Any:
        """latent [1, channels, L] (the quantizer's output) -> float32 waveform."""
        import numpy as np

        out = self.session.run(None, {self.input_name: latent.detach().float().cpu().numpy()})[0]
        return out[0, 0].astype(np.float32)


def probe_codes(codec: Any, frames: int, seed: int) -> Any:
    """Random but valid codes: semantic ids below the semantic codebook, residual ids below 1024."""
    import torch

    from voxfit.engines.fish.codec import codebook_sizes, n_codebooks

    semantic, residual = codebook_sizes(codec)
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, residual, (n_codebooks(codec), frames), generator=g)
    codes[0] = torch.randint(0, semantic, (frames,), generator=g)
    return codes


def max_difference(onnx_decoder: OnnxCodecDecoder, codec: Any) -> float:
    """Largest |ORT - torch| over the probe lengths (inf when a shape differs)."""
    import numpy as np
    import torch

    worst = 0.0
    for i, frames in enumerate(PROBE_FRAMES):
        codes = probe_codes(codec, frames, seed=i)
        with torch.inference_mode():
            reference, _ = codec.decode(codes[None], torch.tensor([frames]))
        reference = reference[0, 0].float().numpy()
        got = onnx_decoder.decode(codes)
        if got.shape != reference.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - reference).max()))
    return worst


def prepare_onnx_codec(
    codec: Any, checkpoint: Path, cache_dir: Optional[Path], threads: int
) -> tuple[Optional[OnnxCodecDecoder], list[str]]:
    """The verified ONNX decoder, or None with the reason the torch decoder stays."""
    if cache_dir is None:
        from voxfit.sdk import Settings

        cache_dir = Settings().cache_dir
    cache = Path(cache_dir) / "fish-codec-onnx"
    notes: list[str] = []
    try:
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"{cache_key(checkpoint, cache)}.onnx"
        decoder = None
        if path.is_file():
            origin = f"cached {path}"
            try:
                decoder = OnnxCodecDecoder(path, threads, codec)
            except ImportError:
                raise
            except Exception as exc:  # truncated or garbage: rebuilt once below, and said so
                notes.append(f"cached ONNX codec at {path} was corrupt ({_first_line(exc)}); rebuilt")
                path.unlink(missing_ok=True)
        if decoder is None:
            from voxfit.engines.fish.codec import codec_config

            cfg, _ = codec_config(checkpoint)
            export_decoder(codec, path, max_frames=int(cfg.transformer_general_config.block_size))
            origin = f"exported to {path}"
            decoder = OnnxCodecDecoder(path, threads, codec)
    except ImportError as exc:
        return None, [f"ONNX codec unavailable ({exc}); kept the torch codec (pip install 'voxfit-cpu-onnx[fish-onnx]')"]
    except Exception as exc:  # export or session failure: torch stays, with the reason
        return None, notes + [f"ONNX codec export/load failed ({_first_line(exc)}); kept the torch codec"]
    diff = max_difference(decoder, codec)
    if not diff <= TOLERANCE:
        return None, notes + [
            f"ONNX codec refused: differs from torch by {diff:.2e} (> {TOLERANCE:g}) on probe codes; "
            f"kept the torch codec ({origin})"
        ]
    return decoder, notes + [
        f"ONNX codec decoder {origin}; matches torch within {diff:.1e} (limit {TOLERANCE:g}) "
        f"on {len(PROBE_FRAMES)} probe lengths; ONNX Runtime with {decoder.threads} intra-op threads"
    ]
