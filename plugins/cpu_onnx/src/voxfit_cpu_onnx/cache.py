"""The int8 variants of ONNX voices, cached under ``settings.cache_dir / "cpu_onnx" / "quantized"``.

``<sha256 of the fp32 model>-<qint8|quint8>.onnx``: made once with
onnxruntime.quantization.quantize_dynamic, recorded (size and sha256, see
voxfit.util.artifacts) and reused from then on; remade only when it fails its
record or cannot be loaded, with a note that says so.
Also the graph ONNX Runtime optimised for this CPU, saved once so later
sessions skip optimisation: ``optimized/<sha256>-<cpu and runtime key>.onnx``.
(Measurements from `voxfit tune` live in the core's cache: voxfit.sdk.lookup_measurement.)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from voxfit.sdk import detect_host, file_sha256, load_or_rebuild, publish, sweep_stale

T = TypeVar("T")
# Weight types quantize_dynamic can produce, by the name used in Proposal.quantization.
QUANT_TYPES = {"int8-dynamic-quint8": "QUInt8", "int8-dynamic-qint8": "QInt8"}


def root(cache_dir: Path) -> Path:
    return Path(cache_dir) / "cpu_onnx"


def quantized_path(cache_dir: Path, sha256: str, quantization: str) -> Path:
    return root(cache_dir) / "quantized" / f"{sha256[:32]}-{QUANT_TYPES[quantization].lower()}.onnx"


def load_quantized(
    cache_dir: Path,
    model_path: Path,
    quantization: str,
    load: Callable[[Path], T],
    unloadable: tuple[type[Exception], ...] = (Exception,),
) -> tuple[T, list[str]]:
    """``load`` applied to the int8 variant of a model, made first if missing, remade once if bad.

    Returns what ``load`` returned and the notes for the user (one when a
    corrupt cached file was rebuilt, naming it). ``unloadable``: the errors
    of ``load`` that mean the int8 file itself is bad.
    """
    if quantization not in QUANT_TYPES:
        raise ValueError(f"unknown quantization {quantization!r}")
    target = quantized_path(cache_dir, file_sha256(Path(cache_dir), Path(model_path)), quantization)

    def make_and_load(path: Path) -> T:
        quantize(Path(model_path), quantization, path)
        return load(path)

    what = f"cached int8 model ({QUANT_TYPES[quantization]})"
    return load_or_rebuild(target, what, load, make_and_load, unloadable)


def ensure_quantized(cache_dir: Path, model_path: Path, quantization: str) -> Path:
    """The path of a model's int8 variant, made now if it is missing or fails its record."""
    path, _ = load_quantized(cache_dir, model_path, quantization, lambda p: p)
    return path


def quantize(model_path: Path, quantization: str, target: Path) -> None:
    """quantize_dynamic ``model_path`` onto ``target``, every scratch file in a private directory beside it.

    quantize_dynamic writes a shape-inferred copy of its input next to the
    input (``<name>-inferred.onnx``): beside a voice that would mean inside
    site-packages, failing where that is read-only and racing with another
    process quantizing the same voice. So it reads a link to the voice made
    in a directory of its own, inside the cache, removed whatever happens.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".scratch-"))
    # quantize_dynamic logs a warning per tensor it leaves in float (hundreds for a VITS
    # graph) on the root logger; they say nothing a user can act on.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        source = scratch / "model.onnx"
        try:
            os.symlink(Path(model_path).resolve(), source)
        except OSError:  # no symlinks here (some Windows setups): a copy does the same job
            shutil.copyfile(model_path, source)
        made = scratch / "quantized.onnx"
        quantize_dynamic(str(source), str(made), weight_type=getattr(QuantType, QUANT_TYPES[quantization]))
        publish(made, target)
    finally:
        logging.disable(previous)
        shutil.rmtree(scratch, ignore_errors=True)


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
