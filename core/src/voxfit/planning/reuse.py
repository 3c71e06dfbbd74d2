"""One plan for a command: the remembered one when nothing it depends on changed, a fresh one otherwise.

Either way the command then runs the same hooks: every installed plugin is
loaded through the one road (entry points), so a plugin the plan does not
involve still cleans a loaded engine (``disable_training_artifacts``) and
still fails a ``--strict`` run. A plan is stored only once the command that
made it succeeded (:meth:`Planned.remember`), so a run that failed leaves
nothing behind for the next. What is checked, and when, is in
:mod:`voxfit.planning.cache`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from voxfit.planning import cache as plan_cache
from voxfit.planning import cpu_load

if TYPE_CHECKING:
    from voxfit.models import Plan
    from voxfit.plugins import PluginHost
    from voxfit.settings import Settings


@dataclass(frozen=True)
class PlanRequest:
    """What a command asks to plan: the options that, with the environment, decide the plan."""

    model: Optional[str] = None
    device: Optional[str] = None
    hardware: Optional[Path] = None
    blocked: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    strict: Optional[bool] = None
    cpu_budget: Optional[int] = None
    no_cache: bool = False

    def key_options(self) -> dict[str, Any]:
        options = {"model": self.model, "device": self.device, "blocked": self.blocked, "allowed": self.allowed,
                   "strict": self.strict}
        if self.cpu_budget is not None:  # only then, so that every other key stays as it was
            options["cpu_budget"] = self.cpu_budget
        return options


@dataclass
class CacheDecision:
    """Whether the plan was reused, when it was made, and why (shown by ``plan --json`` and ``run --json``)."""

    reused: bool
    reason: str
    made_at: Optional[str] = None
    stored: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"reused": self.reused, "made_at": self.made_at, "reason": self.reason, "stored": self.stored}


@dataclass
class Remembered:
    """The light first step: where this plan would be remembered, and the entry if it still holds."""

    cache_dir: Optional[Path]
    key: Optional[str]
    entry: Optional[dict[str, Any]]
    decision: CacheDecision


def remembered(request: PlanRequest, environ: Optional[dict[str, str]] = None,
               cwd: Optional[Path] = None) -> Remembered:
    """Find the remembered plan for a request without importing pydantic or any plugin."""
    environ = dict(os.environ) if environ is None else environ
    why_not = _never_cached(request, environ)
    plan_key = None
    if why_not is None:
        plan_key = plan_cache.key(request.key_options(), environ, cpu_load.snapshot(), cwd or Path.cwd())
        if plan_key is None:
            why_not = "a .env file in this directory: plans are made afresh here"
    if why_not is not None:
        return Remembered(None, None, None, CacheDecision(False, why_not))
    cache_dir = plan_cache.default_cache_dir(environ)
    entry, reason = plan_cache.lookup(cache_dir, plan_key, environ)  # type: ignore[arg-type]
    made_at = entry.get("made_at") if entry else None
    return Remembered(cache_dir, plan_key, entry, CacheDecision(entry is not None, reason, made_at, entry is not None))


def _never_cached(request: PlanRequest, environ: dict[str, str]) -> Optional[str]:
    if request.no_cache:
        return "--no-cache"
    if request.hardware is not None:
        return "a saved hardware profile is planned afresh each time"
    return plan_cache.disabled_by(environ)


@dataclass
class Planned:
    """A plan with the plugin host that made (or reloads) it; ``remember()`` stores a fresh one."""

    host: PluginHost
    plan: Plan
    cache: CacheDecision
    _store: Optional[Callable[[], None]] = None

    def remember(self) -> None:
        """Store the plan for the next command with the same inputs (call once the command succeeded)."""
        if self._store is not None:
            self._store()
            self._store = None
            self.cache.stored = True


def plan(request: PlanRequest, settings: Settings, found: Optional[Remembered] = None,
         environ: Optional[dict[str, str]] = None) -> Planned:
    """The remembered plan if it holds, else a fresh one; all installed plugins loaded either way."""
    from voxfit.models import Plan
    from voxfit.planning.planner import make_plan
    from voxfit.plugins import PluginHost

    environ = dict(os.environ) if environ is None else environ
    found = found or remembered(request, environ)
    host = PluginHost.from_entry_points(settings)
    if found.entry is not None:
        return Planned(host, _typed(host, Plan.model_validate_json(found.entry["plan"])), found.decision)
    fresh = make_plan(host, hardware_file=request.hardware)
    decision = CacheDecision(False, found.decision.reason, made_at=_now())
    store, not_stored = _storer(found, fresh, host, environ, decision.made_at)
    if not_stored:
        decision.reason += f"; not remembered: {not_stored}"
    return Planned(host, fresh, decision, store)


def _typed(host: PluginHost, plan: Plan) -> Plan:
    """A plan read back from JSON with each proposal's options and facts as its owner's models again."""
    ranked = host.typed(plan.ranked())
    plan.chosen, plan.alternatives = (ranked[0], ranked[1:]) if ranked else (None, [])
    kept = {id(p) for p in host.typed([r.proposal for r in plan.rejected])}
    plan.rejected = [r for r in plan.rejected if id(r.proposal) in kept]
    return plan


def _storer(found: Remembered, plan: Plan, host: PluginHost, environ: dict[str, str], made_at: Optional[str]
            ) -> tuple[Optional[Callable[[], None]], Optional[str]]:
    """How to store a fresh plan, or why it must not be."""
    from voxfit.planning.explain import plan_lines

    if found.cache_dir is None or found.key is None:
        return None, None  # the reason is already the decision's
    declared, undeclared = host.plan_inputs()
    why_not = _not_rememberable(plan, undeclared)
    try:
        inputs = plan_cache.read_inputs(declared, environ)
    except plan_cache.UnreadableInput as exc:
        why_not = why_not or f"a declared input cannot be read ({exc})"
    if why_not:
        return None, why_not
    chosen = plan.chosen
    assert chosen is not None  # _not_rememberable refused a plan without a choice
    vetoed = [r.proposal.estimate.peak_memory_bytes for r in plan.rejected
              if r.proposal.memory_pool == "system" and r.proposal.estimate.peak_memory_bytes]
    sources = plan_cache.source_files(["voxfit", *host.modules()])
    sources.update(plan_cache.file_stats(plan.model.files.values()))  # the default model's too
    entry = {
        "plan": plan.model_dump_json(), "text": "\n".join(plan_lines(plan)) + "\n", "sources": sources,
        "inputs": inputs, "headroom": host.settings.memory_headroom, "made_at": made_at,
        "needs_bytes": chosen.estimate.peak_memory_bytes if chosen.memory_pool == "system" else 0,
        "vetoed_needs_bytes": min(vetoed) if vetoed else None,
    }
    cache_dir, plan_key = found.cache_dir, found.key
    return (lambda: plan_cache.store(cache_dir, plan_key, entry)), None


def _not_rememberable(plan: Plan, undeclared: list[str]) -> Optional[str]:
    if plan.chosen is None:
        return "nothing was chosen"
    if plan.problems:
        return "a plugin problem was reported while planning"
    gpus = sorted({d.family for d in plan.hardware.devices if d.family != "cpu"})
    if gpus:
        return f"free memory of a {', '.join(gpus)} device changes between commands"
    if undeclared:
        return (f"plugin {', '.join(undeclared)} detects hardware but declares no plan_inputs, so a change "
                "of its hardware could not be told")
    return None


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S")
