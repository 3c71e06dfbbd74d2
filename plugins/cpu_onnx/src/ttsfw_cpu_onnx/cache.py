"""The int8 variants of ONNX voices, cached under ``settings.cache_dir / "cpu_onnx" / "quantized"``.

``<sha256 of the fp32 model>-<qint8|quint8>.onnx``: made once with
onnxruntime.quantization.quantize_dynamic, written atomically, never remade.
Also the graph ONNX Runtime optimised for this CPU, saved once so later
sessions skip optimisation: ``optimized/<sha256>-<cpu and runtime key>.onnx``.
(Measurements from `ttsfw tune` live in the core's cache: ttsfw.sdk.lookup_measurement.)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import platform
from pathlib import Path

from ttsfw.sdk import atomic_target, detect_host, file_sha256

# Weight types quantize_dynamic can produce, by the name used in Proposal.quantization.
QUANT_TYPES = {"int8-dynamic-quint8": "QUInt8", "int8-dynamic-qint8": "QInt8"}


def root(cache_dir: Path) -> Path:
    return Path(cache_dir) / "cpu_onnx"


def quantized_path(cache_dir: Path, sha256: str, quantization: str) -> Path:
    return root(cache_dir) / "quantized" / f"{sha256[:32]}-{QUANT_TYPES[quantization].lower()}.onnx"


def ensure_quantized(cache_dir: Path, model_path: Path, quantization: str) -> Path:
    """The int8 variant of a model, made once (quantize_dynamic) and reused from then on, never remade."""
    if quantization not in QUANT_TYPES:
        raise ValueError(f"unknown quantization {quantization!r}")
    sha = file_sha256(Path(cache_dir), Path(model_path))
    target = quantized_path(cache_dir, sha, quantization)
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a warning per tensor it leaves in float (hundreds for a VITS
    # graph) on the root logger; they say nothing a user can act on.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with atomic_target(target, suffix=".onnx") as tmp:
            quantize_dynamic(str(model_path), str(tmp), weight_type=getattr(QuantType, QUANT_TYPES[quantization]))
    finally:
        logging.disable(previous)
    return target


def optimized_path(cache_dir: Path, model_path: Path, level: str) -> Path:
    """Where the optimised graph of a model lives.

    ONNX Runtime's full optimisation rewrites the graph for the CPU's vector
    units (NCHWc layouts), so the key holds the CPU, the architecture, the
    onnxruntime version and the level besides the model's hash: a home
    directory shared between machines never hands one CPU another's graph.
    """
    host = detect_host()
    ident = "|".join(
        [platform.machine(), host.cpu_model, " ".join(host.isa_flags), importlib.metadata.version("onnxruntime"), level]
    )
    sha = file_sha256(Path(cache_dir), Path(model_path))
    return root(cache_dir) / "optimized" / f"{sha[:32]}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.onnx"
