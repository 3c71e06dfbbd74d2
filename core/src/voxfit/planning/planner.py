"""Making a plan: detect -> resolve the model -> score_config -> rank -> prepare_env."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from voxfit.errors import UsageError
from voxfit.models import EnvChange, HardwareProfile, ModelSpec, Plan, Proposal, format_score
from voxfit.planning import hardware as hw
from voxfit.planning.ranking import rank
from voxfit.plugins import PluginHost


def detect(host: PluginHost) -> HardwareProfile:
    base = hw.detect_host(cpu_budget=host.settings.cpu_budget)
    detections, _ = host.call("detect", host=base, settings=host.settings)
    # pluggy calls the last registered plugin first; merge in registration (name) order instead.
    detections.reverse()
    profile = hw.merge(base, detections)
    if host.settings.cpu_reserved:
        # A scheduler reserved this budget's cores for us (a Ray replica): the node's other load is its to place.
        from voxfit.planning.cpu_load import without_load

        profile.flags = without_load(profile.flags)
        profile.notes.append("CPU load not read: this process's cores are reserved for it (VOXFIT_CPU_RESERVED)")
    return profile


def env_changes_for(host: PluginHost, proposal: Proposal, hardware: HardwareProfile) -> list[EnvChange]:
    results, _ = host.call("prepare_env", proposal=proposal, hardware=hardware, settings=host.settings)
    return [change for changes in results for change in changes]


def make_plan(
    host: PluginHost,
    hardware_file: Optional[Path] = None,
    model: Optional[ModelSpec] = None,
    hardware: Optional[HardwareProfile] = None,
) -> Plan:
    if hardware is None and hardware_file:
        # A saved profile describes a whole machine; a budget still says how much of it this plan may count.
        hardware = hw.apply_cpu_budget(hw.load_profile(hardware_file), host.settings.cpu_budget)
    if hardware is None:
        hardware = detect(host)
    check_device_lock(host, hardware)
    if model is None:
        model = host.resolve_model(host.settings.model)
    proposals, _ = host.call("score_config", model=model, hardware=hardware, settings=host.settings,
                             engines=host.registry)
    proposals = host.typed(proposals)
    _apply_tuned_batches(host, proposals, model, hardware)
    feasible, rejected = rank(proposals, model, hardware, host.settings, host.registry)
    chosen = feasible[0] if feasible else None
    env = env_changes_for(host, chosen, hardware) if chosen else []
    plan = Plan(
        model=model,
        hardware=hardware,
        device_lock=host.settings.device,
        chosen=chosen,
        alternatives=feasible[1:],
        rejected=rejected,
        env_changes=env,
        problems=list(host.problems),
    )
    plan.summary = summarize(plan, host)
    return plan


def _apply_tuned_batches(host: PluginHost, proposals: list[Proposal], model: ModelSpec,
                         hardware: HardwareProfile) -> None:
    """What ``voxfit tune --batch`` measured here lowers a batched proposal's batch (never raises it)."""
    if not any(p.batch_size > 1 for p in proposals):
        return
    from voxfit.planning.batching import apply_tuned_batch
    from voxfit.planning.measurements import load_batch, proposal_key

    tuned = load_batch(host.settings.cache_dir, hardware, model)
    for proposal in proposals:
        apply_tuned_batch(proposal, tuned.get(proposal_key(proposal)))


def check_device_lock(host: PluginHost, hardware: HardwareProfile) -> None:
    """A device lock must name a family some plugin knows (or a device in the profile has)."""
    lock = host.settings.device
    known = host.registry.family_names(hardware)
    if lock == "auto" or lock in known:
        return
    present = sorted({d.family for d in hardware.devices} | {"cpu"})
    raise UsageError(
        f"unknown device {lock!r} from {host.settings.device_source}: choose auto or a device family the "
        f"plugins know: {', '.join(known)}"
        f" (present on {'this machine' if hardware.source == 'detected' else hardware.source}: {', '.join(present)})"
    )


def summarize(plan: Plan, host: Optional[PluginHost] = None) -> str:
    """One line: what was chosen and why, or why nothing was (naming the plugins that were left out)."""
    lock = "" if plan.device_lock == "auto" else f" (device locked to {plan.device_lock})"
    if plan.chosen is None:
        considered = len(plan.rejected)
        if not considered:
            return _nothing_proposed(plan, host, lock) + _absent_device(plan, host)
        return f"all {considered} proposals for {plan.model.name} were vetoed{lock}" + _absent_device(plan, host)
    c = plan.chosen
    runner_up = plan.alternatives[0] if plan.alternatives else None
    why = c.reasons[0] if c.reasons else "highest score"
    text = f"chose {c.label()} (score {c.shown_score()}){lock}: {why}"
    if runner_up is not None:
        text += f"; next best {runner_up.label()} (score {runner_up.shown_score()})"
    decided = _decided_by_penalty(c, plan.alternatives)
    if decided:
        text += f"; {decided}"
    for name in host.unknown_allowed() if host else []:
        text += f"; note: {name!r} in the allow-list is not an installed plugin"
    return text


def _absent_device(plan: Plan, host: Optional[PluginHost]) -> str:
    """When the device lock names a family no device of this machine has: which plugin looked, what it found."""
    lock = plan.device_lock
    if lock in ("auto", "cpu") or any(d.family == lock for d in plan.hardware.devices):
        return ""
    family = host.registry.families.get(lock) if host is not None else None
    if family is None:
        return f"; no {lock} device in the hardware profile"
    said = [note.split(": ", 1)[1] for note in plan.hardware.notes if note.startswith(f"{family.plugin}: ")]
    found = f"; it says: {'; '.join(said)}" if said else " and reported nothing"
    return f"; no {lock} device was found: plugin {family.plugin} looked for one{found}"


def _decided_by_penalty(chosen: Proposal, alternatives: list[Proposal]) -> str:
    """Say so when a named score factor (a busy GPU...) is what put another proposal behind the chosen one."""
    for alt in alternatives:
        factors = {k: v for k, v in alt.score_factors.items() if 0 < v < 1}
        if not factors:
            continue
        unpenalised = alt.score
        for value in factors.values():
            unpenalised /= value
        if unpenalised > chosen.score:
            named = ", ".join(f"{k} (x{v:.2f})" for k, v in factors.items())
            return (f"{alt.label()} would have scored {format_score(unpenalised)} and won but for {named}: "
                    "the load decided")
    return ""


def _nothing_proposed(plan: Plan, host: Optional[PluginHost], lock: str) -> str:
    # Blame the model only when plugins were loaded and none could run it; when the
    # allow-list or -p no: left nothing loaded, say that instead.
    model = f"{plan.model.family} model {plan.model.name}"
    if host is None:
        return f"no plugin proposed a way to run {model}{lock}"
    loaded = host.active()
    head = (f"no loaded plugin ({', '.join(loaded)}) proposed a way to run {model}{lock}" if loaded
            else "no plugin is loaded")
    left_out = host.left_out()
    return head + (": " + "; ".join(left_out) if left_out else "")
