"""From a plan to a loaded, checked engine: prepare_env -> load_engine -> disable_training_artifacts -> check."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from voxfit.engine import Engine, engine_notes
from voxfit.errors import EngineLoadError, InvariantViolation, NoFeasiblePlan
from voxfit.models import EnvChange, Plan, PluginProblem, Proposal
from voxfit.planning.planner import env_changes_for
from voxfit.plugins import PluginHost, one_line
from voxfit.speaking import invariants

#: Frameworks whose device choice is made at import (CUDA_VISIBLE_DEVICES and the like are read then); the
#: registered engines' own requirements count too (``heavy``).
FRAMEWORKS = ("torch", "onnxruntime", "tensorflow", "jax")


@dataclass
class LoadAttempt:
    proposal: Proposal
    ok: bool
    reason: str


@dataclass
class LoadedEngine:
    engine: Engine
    proposal: Proposal
    attempts: list[LoadAttempt] = field(default_factory=list)
    env_applied: list[EnvChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    artifacts_disabled: list[str] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)  # plugin faults after the plan was made

    @property
    def fell_back(self) -> bool:
        return len(self.attempts) > 1


def apply_env(changes: list[EnvChange], environ: Optional[Any] = None, heavy: tuple[str, ...] = ()) -> list[str]:
    """Apply environment changes; return notes about changes that may come too late (a framework among
    :data:`FRAMEWORKS` or ``heavy`` already imported)."""
    environ = os.environ if environ is None else environ
    notes = []
    for change in changes:
        if change.kind == "set_env":
            environ[change.key] = change.value
        elif change.kind == "unset_env":
            environ.pop(change.key, None)
        elif change.kind == "prepend_path":
            current = environ.get(change.key, "")
            parts = [p for p in current.split(os.pathsep) if p]
            if change.value not in parts:
                environ[change.key] = os.pathsep.join([change.value, *parts])
        elif change.kind == "mp_start_method":
            import multiprocessing  # only here: importing it costs a short run ~15 ms

            multiprocessing.set_start_method(change.value, force=True)
    late = [m for m in dict.fromkeys((*FRAMEWORKS, *heavy)) if m in sys.modules]
    if changes and late:
        notes.append(
            f"{', '.join(late)} already imported before the environment was prepared; "
            "device-hiding variables may not take effect in this process"
        )
    return notes


def load_proposal(host: PluginHost, plan: Plan, proposal: Proposal, applied: list[EnvChange]) -> LoadedEngine:
    """Prepare the process for one proposal, load it, clean it and verify it.

    ``applied`` lists the changes already made to this process (updated in
    place). Raises :class:`EngineLoadError` when the proposal does not load
    and :class:`InvariantViolation` when the loaded engine is not clean.
    """
    changes = plan.env_changes if proposal is plan.chosen else env_changes_for(host, proposal, plan.hardware)
    fresh = [c for c in changes if c not in applied]
    notes = apply_env(fresh, heavy=tuple(m for info in host.registry.engines.values() for m in info.requires))
    applied.extend(fresh)
    engine, problems = host.call_owner(
        "load_engine", proposal.plugin,
        proposal=proposal, model=plan.model, settings=host.settings, engines=host.registry,
    )
    if engine is None:
        raise EngineLoadError(
            "; ".join(p.error for p in problems) or f"plugin {proposal.plugin!r} did not load engine {proposal.engine!r}"
        )
    loaded = LoadedEngine(engine=engine, proposal=proposal, env_applied=list(applied), notes=notes)
    finish(host, loaded)
    loaded.notes.extend(engine_notes(engine))
    return loaded


def load(host: PluginHost, plan: Plan) -> LoadedEngine:
    """Load the best proposal that loads, falling back down the ranking and saying why."""
    if plan.chosen is None:
        raise NoFeasiblePlan(plan.summary)
    attempts: list[LoadAttempt] = []
    applied: list[EnvChange] = []
    before = len(host.problems)
    for proposal in plan.ranked():
        try:
            loaded = load_proposal(host, plan, proposal, applied)
        except EngineLoadError as exc:
            attempts.append(LoadAttempt(proposal, False, str(exc)))
            continue
        attempts.append(LoadAttempt(proposal, True, "loaded"))
        loaded.attempts = attempts
        loaded.problems = host.problems[before:]
        return loaded
    tried = "; ".join(f"{a.proposal.label()}: {a.reason}" for a in attempts)
    raise EngineLoadError(f"no proposal could be loaded ({tried})")


def finish(host: PluginHost, loaded: LoadedEngine) -> None:
    """Disable training artifacts through the hooks, then verify; refuse a dirty engine."""
    actions, _ = host.call("disable_training_artifacts", engine=loaded.engine)  # every plugin, not only the owner
    loaded.artifacts_disabled = [line for lines in actions for line in lines]
    try:
        found = invariants.violations(loaded.engine.inference_modules())
    except Exception as exc:  # an engine that cannot be inspected cannot be trusted either
        found = [f"could not inspect the engine's modules: {one_line(exc)}"]
    if found:
        loaded.engine.close()
        raise InvariantViolation(
            f"refusing to run {loaded.proposal.label()}: still carries training artifacts: " + "; ".join(found)
        )
