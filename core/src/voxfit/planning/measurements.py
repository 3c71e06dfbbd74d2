"""Measurements cached per machine and model, written by ``voxfit tune`` and read by plugins' score_config.

A measurement is the RTF a proposal actually reached here. It is stored under
``settings.cache_dir / "measurements" / <machine>-<model sha256>.json`` keyed
by :func:`proposal_key` (which covers every setting of the proposal, so a
changed option is a different key), together with the versions of the
runtime modules it ran with; a plugin ignores an entry measured with other
versions. Nothing here imports a framework.
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

from voxfit.models import HardwareProfile, ModelSpec, Proposal
from voxfit.util.files import file_sha256, read_json, write_atomic


def machine_key(hardware: HardwareProfile) -> str:
    """What a measurement depends on about the machine: CPU, core counts, ISA flags, OS, architecture."""
    ident = "|".join(
        [hardware.cpu_model, str(hardware.cores_physical), str(hardware.cores_logical),
         ",".join(sorted(hardware.isa_flags)), hardware.os, hardware.arch]
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def model_key(cache_dir: Path, model: ModelSpec) -> Optional[str]:
    """The model's content: its file's sha256, or for a model directory (a checkpoint of several files) the
    sha256 of its files' names and hashes."""
    if model.path is None:
        return None
    path = Path(model.path)
    if path.is_file():
        return file_sha256(cache_dir, path)[:16]
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file())
    listing = "\n".join(f"{p.name} {file_sha256(cache_dir, p)}" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def proposal_key(p: Proposal) -> str:
    """Every setting that changes how a proposal runs; the owning plugin is part of it."""
    settings = {
        "plugin": p.plugin, "device": p.device, "engine": p.engine, "precision": p.precision,
        "quantization": p.quantization, "compile": p.compile, "threads": p.threads,
        "options": p.options.model_dump(mode="json", exclude_none=True),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


def module_versions(distributions: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in distributions:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _path(cache_dir: Path, hardware: HardwareProfile, model: ModelSpec) -> Optional[Path]:
    key = model_key(cache_dir, model)
    if key is None:
        return None
    return Path(cache_dir) / "measurements" / f"{machine_key(hardware)}-{key}.json"


def load(cache_dir: Path, hardware: HardwareProfile, model: ModelSpec) -> dict[str, dict[str, Any]]:
    """{proposal_key: {"rtf", "label", "measured_at", "versions", ...}}; empty if never tuned here."""
    path = _path(cache_dir, hardware, model)
    if path is None:
        return {}
    entries = read_json(path).get("proposals")
    return entries if isinstance(entries, dict) else {}


def lookup(
    cache_dir: Path, hardware: HardwareProfile, model: ModelSpec, proposal: Proposal, versions: dict[str, str]
) -> Optional[dict[str, Any]]:
    """The measurement of exactly this proposal on this machine and model, with the same runtime versions."""
    entry = load(cache_dir, hardware, model).get(proposal_key(proposal))
    if not isinstance(entry, dict) or not isinstance(entry.get("rtf"), (int, float)):
        return None
    recorded = entry.get("versions") or {}
    if any(recorded.get(name) != version for name, version in versions.items()):
        return None  # measured with another version of the runtime: no longer says anything
    return entry


def load_decision(cache_dir: Path, hardware: HardwareProfile, model: ModelSpec) -> Optional[dict[str, Any]]:
    """What the last ``voxfit tune`` chose here ({"winner", "control", "reason", ...}), or None."""
    path = _path(cache_dir, hardware, model)
    decision = read_json(path).get("decision") if path is not None else None
    return decision if isinstance(decision, dict) and isinstance(decision.get("winner"), str) else None


def save(
    cache_dir: Path, hardware: HardwareProfile, model: ModelSpec, entries: dict[str, dict[str, Any]],
    decision: Optional[dict[str, Any]] = None,
) -> Path:
    """Merge ``entries`` into the cache; ``decision`` (what tune chose) replaces the previous one when given."""
    path = _path(cache_dir, hardware, model)
    if path is None:
        raise ValueError(f"model {model.name} has no file to key measurements by")
    current = load(cache_dir, hardware, model)
    current.update(entries)
    if decision is None:
        decision = load_decision(cache_dir, hardware, model)
    data = {
        "machine": machine_key(hardware),
        "cpu_model": hardware.cpu_model,
        "model": model.name,
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "proposals": current,
    }
    if decision is not None:
        data["decision"] = decision
    batch = load_batch(cache_dir, hardware, model)
    if batch:
        data["batch"] = batch
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
    return path


def load_batch(cache_dir: Path, hardware: HardwareProfile, model: ModelSpec) -> dict[str, dict[str, Any]]:
    """{proposal_key: what ``voxfit tune --batch`` chose for it here}; empty if never tuned."""
    path = _path(cache_dir, hardware, model)
    entries = read_json(path).get("batch") if path is not None else None
    return entries if isinstance(entries, dict) else {}


def save_batch(cache_dir: Path, hardware: HardwareProfile, model: ModelSpec, key: str, entry: dict[str, Any]) -> Path:
    """Record a batch measurement beside the proposals' measurements."""
    path = _path(cache_dir, hardware, model)
    if path is None:
        raise ValueError(f"model {model.name} has no files to key measurements by")
    data = read_json(path) or {"machine": machine_key(hardware), "cpu_model": hardware.cpu_model,
                               "model": model.name, "proposals": {}}
    data.setdefault("batch", {})[key] = entry
    data["saved_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
    return path
