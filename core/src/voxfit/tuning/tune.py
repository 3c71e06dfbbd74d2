"""``voxfit tune`` (``tune_plan(session.host, session.plan)`` from Python): measure a plan's proposals round robin against the current choice.

The decision is :mod:`voxfit.tuning.round_robin`' (pure, tested with a fake machine);
the measurements are :mod:`voxfit.tuning.trials`'s (each visit loads a proposal
fresh through the runtime's own load path, as a new ``voxfit run`` would). The
machine is measured as built: the plan's CPU-load snapshot is dropped first,
since a run fits its threads to the load it sees then.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from voxfit.errors import NoFeasiblePlan
from voxfit.models import Plan, Proposal
from voxfit.planning import measurements as tuning
from voxfit.planning.cpu_load import without_load
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.tuning import round_robin as tune_rounds
from voxfit.tuning import trials as tune_run


@dataclass
class TuneResult:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    decision: Any = None  # the tune_rounds.Decision: winner, control, reason, rounds
    summary: Optional[dict[str, Any]] = None  # what is cached of the decision
    path: Optional[Path] = None
    plan: Optional[Plan] = None  # the plan made again with the measurements
    not_saved: Optional[str] = None  # why the measurements could not be cached, as one line


def tune_plan(host: PluginHost, plan: Plan, rounds: int = 3) -> TuneResult:
    quiet = plan.hardware.model_copy(update={"flags": without_load(plan.hardware.flags)})
    plan = make_plan(host, model=plan.model, hardware=quiet)
    if plan.chosen is None:
        raise NoFeasiblePlan(plan.summary)
    dists = importlib.metadata.packages_distributions()

    def versions(p: Proposal) -> dict[str, str]:
        info = host.registry.engine(p.engine)
        return tuning.module_versions(sorted({d for m in (info.requires if info else ()) for d in dists.get(m, [])}))

    proposals = {tuning.proposal_key(p): p for p in plan.ranked()}
    control = tuning.proposal_key(plan.chosen)
    measure = tune_run.engine_measurer(host, plan, proposals)
    decision = tune_rounds.tune(list(proposals), control, measure, rounds, list(tune_run.WORKLOADS))
    entries, summary = tune_run.cache_entries(decision, proposals, versions, time.strftime("%Y-%m-%d %H:%M"))
    result = TuneResult(entries=entries, decision=decision, summary=summary,
                        failed={proposals[k].label(): why for k, why in decision.failed.items()})
    result.path, result.not_saved = _save(host.settings.cache_dir, plan, entries, summary)
    if result.not_saved is None:
        result.plan = make_plan(host, model=plan.model, hardware=plan.hardware)
    return result


def _save(cache_dir: Path, plan: Plan, entries: dict[str, Any], summary: Optional[dict[str, Any]]
          ) -> tuple[Optional[Path], Optional[str]]:
    """(where the measurements were cached, None) or (None, why they were not, as one line)."""
    if not entries:
        return None, None
    try:
        return tuning.save(cache_dir, plan.hardware, plan.model, entries, summary), None
    except OSError as exc:
        where = exc.filename2 or exc.filename or cache_dir
        why = exc.strerror or str(exc)
        return None, (
            f"measured, but not saved: cannot write {where} ({why}) in the cache directory {cache_dir} "
            "(VOXFIT_CACHE_DIR); later plans will rank without these measurements"
        )
