"""``ttsfw tune``: measure the feasible proposals of a plan here and cache what they reached.

One proposal is loaded at a time (a Fish model in every variant at once would
not fit in memory), through the runtime's own load path, so a measured
proposal ran exactly as a real run would.
"""

from __future__ import annotations

import importlib.metadata
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import runtime, tuning
from .errors import EngineLoadError
from .models import Plan
from .planner import make_plan
from .plugins import PluginHost
from .synthesis import synthesize
from .text import split_sentences

TUNE_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "A short measurement tells which settings are fastest on this machine. "
    "Every proposal speaks these same sentences, in turn, several times."
)


@dataclass
class TuneResult:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    path: Optional[Path] = None
    plan: Optional[Plan] = None  # the plan made again with the measurements
    not_saved: Optional[str] = None  # why the measurements could not be cached, as one line


class _Null:
    def write(self, pcm: bytes) -> None:
        pass


def tune_plan(
    host: PluginHost, plan: Plan, rounds: int = 3, on_measured: Optional[Callable[[str], None]] = None
) -> TuneResult:
    dists = importlib.metadata.packages_distributions()
    chunks = split_sentences(TUNE_TEXT, 400)
    result = TuneResult()
    applied: list[Any] = []
    stamp = time.strftime("%Y-%m-%d %H:%M")
    for proposal in plan.ranked():
        t0 = time.perf_counter()
        try:
            loaded = runtime.load_proposal(host, plan, proposal, applied)
        except EngineLoadError as exc:
            result.failed[proposal.label()] = str(exc)
            continue
        seconds = time.perf_counter() - t0
        try:
            list(loaded.engine.synthesize("Warm up."))  # first run allocates; not part of the measurement
            rtfs = [synthesize(loaded.engine, chunks, _Null()).rtf or float("inf") for _ in range(rounds)]
        finally:
            loaded.engine.close()
        if on_measured is not None:
            on_measured(f"measured {proposal.label()}: load {seconds:.2f} s, RTF {statistics.median(rtfs):.3f}")
        info = host.registry.engine(proposal.engine)
        names = sorted({d for m in (info.requires if info else ()) for d in dists.get(m, [])})
        result.entries[tuning.proposal_key(proposal)] = {
            "rtf": statistics.median(rtfs),
            "rtf_all": rtfs,
            "load_seconds": round(seconds, 3),
            "label": proposal.label(),
            "measured_at": stamp,
            "versions": tuning.module_versions(names),
        }
    result.path, result.not_saved = _save(host.settings.cache_dir, plan, result.entries)
    if result.not_saved is None:
        result.plan = make_plan(host, model=plan.model, hardware=plan.hardware)
    return result


def _save(cache_dir: Path, plan: Plan, entries: dict[str, Any]) -> tuple[Optional[Path], Optional[str]]:
    """(where the measurements were cached, None) or (None, why they were not, as one line)."""
    if not entries:
        return None, None
    try:
        return tuning.save(cache_dir, plan.hardware, plan.model, entries), None
    except OSError as exc:
        where = exc.filename2 or exc.filename or cache_dir
        why = exc.strerror or str(exc)
        return None, (
            f"measured, but not saved: cannot write {where} ({why}) in the cache directory {cache_dir} "
            "(TTSFW_CACHE_DIR); later plans will rank without these measurements"
        )
