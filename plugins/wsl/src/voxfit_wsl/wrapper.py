"""Adjusting the CUDA plugin's proposals for WSL: a ``score_config`` hook wrapper's logic.

The wrapper sees the flat list of every plugin's proposals and changes only
those that run on CUDA (``device_family == "cuda"``), keeping their owner:

* WSL2: torch.compile works (Triton runs under WSL2, unlike native Windows).
  A proposal that left compile off only because of the OS (its
  ``facts["compile_blocked"] == "os"``) gets a compiled sibling; one that
  compiles gets the WSL2 reason.
* Model files on a Windows drive (``/mnt/<drive>``) are read over WSL2's 9P
  bridge: the reasons say so and ``estimate.load_seconds`` grows.
* WSL1: no GPU; every CUDA proposal is vetoed with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from voxfit.sdk import HardwareProfile, ModelSpec, Proposal, Registry

# Assumed read throughput. Linux ext4 in WSL2's virtual disk: ~1 GB/s on an SSD.
# Windows drives through 9P: Microsoft's WSL docs advise keeping files in the Linux
# filesystem for speed; large sequential reads over 9P are commonly ~100 MB/s.
LINUX_FS_BYTES_PER_S = 1.0e9
BRIDGE_BYTES_PER_S = 100e6


def on_windows_drive(path: Optional[Path], mounts: list[str]) -> Optional[str]:
    """The Windows mount a path lies under (e.g. "/mnt/c"), or None."""
    if path is None:
        return None
    text = str(path)
    for mount in sorted(mounts, key=len, reverse=True):
        if text == mount or text.startswith(mount.rstrip("/") + "/"):
            return mount
    return None


def model_bytes(model: ModelSpec) -> int:
    """Bytes a load reads: the model's files where they can be seen, else 2 bytes per parameter."""
    total = 0
    for path in model.files.values():
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return total or 2 * (model.parameter_count or 0)


def _is_cuda(p: Proposal) -> bool:
    return p.device_family == "cuda"


def adjust(proposals: list[Proposal], model: ModelSpec, hardware: HardwareProfile, engines: Registry) -> list[Proposal]:
    kind = hardware.flags.get("wsl")
    if kind not in ("wsl1", "wsl2"):
        return proposals
    if kind == "wsl1":
        for p in filter(_is_cuda, proposals):
            p.vetoes.append("WSL1 has no GPU access (voxfit-wsl): CUDA needs WSL2 "
                            "(in Windows: wsl --set-version <distro> 2)")
        return proposals
    mounts = [m for m in str(hardware.flags.get("wsl_windows_mounts") or "/mnt/c").split(",") if m]
    drive = on_windows_drive(model.path, mounts)
    out: list[Proposal] = []
    for p in proposals:
        out.append(p)
        if not _is_cuda(p):
            continue
        if p.compile:
            p.reasons.append("WSL2 (voxfit-wsl): torch.compile works here, Triton runs under WSL2 unlike native "
                             "Windows (docs/field-notes.md: 20-30% faster on WSL2 + NVIDIA)")
        elif p.facts.compile_blocked == "os":
            calibration = engines.calibration_for(p.engine, "cuda")
            out.append(_compiled_sibling(p, calibration.compile_speedup if calibration else 1.0))
    if drive:
        for p in filter(_is_cuda, out):
            _slow_bridge(p, model, drive)
    return out


def _compiled_sibling(p: Proposal, speedup: float) -> Proposal:
    twin = p.model_copy(deep=True)
    twin.compile = True
    twin.facts = twin.facts.model_copy(update={"compile_blocked": None})
    if twin.estimate.tokens_per_s:
        twin.estimate.tokens_per_s *= speedup
    if twin.estimate.rtf:
        twin.estimate.rtf /= speedup
    twin.score = round(twin.score * speedup, 4)
    if "triton" not in twin.requires:
        twin.requires.append("triton")
    twin.reasons.append(f"WSL2 (voxfit-wsl): this is Linux, not native Windows: Triton works, so torch.compile is "
                        f"allowed (docs/field-notes.md: 20-30% faster on WSL2 + NVIDIA; score x {speedup:g}) at the "
                        "cost of minutes of compilation at start-up")
    return twin


def _slow_bridge(p: Proposal, model: ModelSpec, drive: str) -> None:
    size = model_bytes(model)
    local = size / LINUX_FS_BYTES_PER_S
    bridged = size / BRIDGE_BYTES_PER_S
    base = p.estimate.load_seconds if p.estimate.load_seconds is not None else local
    p.estimate.load_seconds = round(base + bridged - local, 1)
    p.reasons.append(
        f"WSL2 (voxfit-wsl): the model lies on a Windows drive ({drive}), read over WSL2's 9P bridge at an assumed "
        f"~{BRIDGE_BYTES_PER_S / 1e6:.0f} MB/s instead of ~{LINUX_FS_BYTES_PER_S / 1e9:.0f} GB/s: loading "
        f"{size / 1e9:.2f} GB takes ~{bridged:.0f} s instead of ~{local:.0f} s; copy it into the Linux filesystem "
        "(e.g. ~/models) to load faster"
    )
