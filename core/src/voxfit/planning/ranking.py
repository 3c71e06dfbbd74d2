"""Ranking: hard vetoes first, then score, then a deterministic tie-break.

Everything here is hardware-agnostic: it reads only the proposals, the
model spec, the hardware profile and the settings.
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import Optional

from voxfit.models import HardwareProfile, ModelSpec, Proposal, RejectedProposal
from voxfit.planning.hardware import describe_memory
from voxfit.registry import Registry
from voxfit.settings import Settings


def _module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _memory_veto(proposal: Proposal, hardware: HardwareProfile, headroom: float) -> Optional[str]:
    needed = proposal.estimate.peak_memory_bytes
    if needed is None:
        return None
    if proposal.memory_pool == "device":
        device = hardware.device(proposal.device)
        free = device.memory_free_bytes if device else None
        where = f"free on {proposal.device}"
    else:
        free = hardware.memory_available_bytes
        where = "of system RAM available"
    if free is None:
        return None
    usable = int(free * (1.0 - headroom))
    if needed > usable:
        return (
            f"needs about {describe_memory(needed)} but only {describe_memory(free)} {where} "
            f"(keeping {headroom:.0%} headroom, {describe_memory(usable)} usable)"
        )
    return None


def vetoes(
    proposal: Proposal, model: ModelSpec, hardware: HardwareProfile, settings: Settings, registry: Registry
) -> list[str]:
    """Every hard reason this proposal cannot run; empty when it can. The same checks for every engine."""
    reasons = list(proposal.vetoes)
    if settings.device != "auto" and proposal.device_family != settings.device:
        reasons.append(
            f"device locked to {settings.device} (--device / VOXFIT_DEVICE); "
            f"this proposal runs on {proposal.device_family}"
        )
    if hardware.device(proposal.device) is None and proposal.device_family != "cpu":
        reasons.append(f"device {proposal.device!r} is not in the hardware profile")
    info = registry.engine(proposal.engine)
    if info is None:
        reasons.append(f"engine {proposal.engine!r} is not registered by any installed plugin")
    elif not info.runs(model.family):
        reasons.append(f"engine {proposal.engine} does not run {model.family} models")
    if hardware.source == "detected":
        # For a saved profile of another machine, what is installed here says nothing.
        required = list(proposal.requires) + (list(info.requires) if info else [])
        missing = sorted({m for m in required if _module_missing(m)})
        programs = sorted({p for p in (info.programs if info else ()) if shutil.which(p) is None})
        if missing or programs:
            hint = f" ({info.hint()})" if info and info.hint() else ""
            what = ", ".join([*missing, *(f"the program {p}" for p in programs)])
            reasons.append(f"runtime missing: {what} not installed{hint}")
    memory = _memory_veto(proposal, hardware, settings.memory_headroom)
    if memory:
        reasons.append(memory)
    return reasons


def _tie_break(p: Proposal) -> tuple:
    return (-p.score, p.plugin, p.device, p.engine, p.precision, p.quantization, p.compile, p.threads or 0)


def rank(
    proposals: list[Proposal], model: ModelSpec, hardware: HardwareProfile, settings: Settings, registry: Registry
) -> tuple[list[Proposal], list[RejectedProposal]]:
    """Split proposals into the feasible ones (best first) and the vetoed ones with reasons."""
    feasible: list[Proposal] = []
    rejected: list[RejectedProposal] = []
    for proposal in proposals:
        reasons = vetoes(proposal, model, hardware, settings, registry)
        if reasons:
            rejected.append(RejectedProposal(proposal=proposal, reasons=reasons))
        else:
            feasible.append(proposal)
    feasible.sort(key=_tie_break)
    rejected.sort(key=lambda r: _tie_break(r.proposal))
    return feasible, rejected
