"""A plan as the lines ``voxfit plan`` prints (and the plan cache keeps, to print again without pydantic)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxfit.planning.hardware import describe_memory

if TYPE_CHECKING:
    from voxfit.models import Plan, Proposal


def estimate_text(p: Proposal) -> str:
    e = p.estimate
    parts = []
    if e.rtf is not None:
        parts.append(f"RTF ~{e.rtf:.2f}")
    if e.tokens_per_s is not None:
        parts.append(f"~{e.tokens_per_s:.1f} tokens/s")
    if e.peak_memory_bytes is not None:
        parts.append(f"peak ~{describe_memory(e.peak_memory_bytes)}")
    return ", ".join(parts) or "no estimate"


def _entry(marker: str, headline: str, reasons: list[str]) -> list[str]:
    return [f"  {marker} {headline}", *(f"       - {reason}" for reason in reasons)]


def plan_lines(plan: Plan) -> list[str]:
    m = plan.model
    params = f", {m.parameter_count / 1e6:.1f} M parameters" if m.parameter_count else ""
    rate = f", {m.sample_rate} Hz" if m.sample_rate else ""
    hw = plan.hardware
    devices = ", ".join(d.id for d in hw.devices) or "none"
    lines = [
        f"Model:    {m.family} {m.name} ({m.source}{params}{rate})",
        f"Hardware: {hw.os} {hw.arch}, {hw.cpu_model}, {describe_memory(hw.memory_available_bytes)} RAM free;"
        f" devices: {devices}" + ("" if hw.source == "detected" else f" (from {hw.source})"),
        f"Device:   {plan.device_lock}" + (" (locked)" if plan.device_lock != "auto" else ""),
        "",
    ]
    if plan.chosen:
        c = plan.chosen
        lines.append(f"Chosen:   {c.label()}  score {c.shown_score()}  ({estimate_text(c)})")
        lines += [f"  - {reason}" for reason in c.reasons]
    else:
        lines.append("Chosen:   nothing")
    if plan.alternatives:
        lines.append("Alternatives:")
        for i, p in enumerate(plan.alternatives, start=2):
            lines += _entry(f"{i}.", f"{p.label()}  score {p.shown_score()}  ({estimate_text(p)})", p.reasons)
    if plan.rejected:
        lines.append("Vetoed:")
        for r in plan.rejected:
            lines += _entry("x", f"{r.proposal.label()}  ({estimate_text(r.proposal)})", r.reasons)
    if plan.env_changes:
        lines.append("Environment changes:")
        lines += [f"  - {change.describe()}" for change in plan.env_changes]
    lines += problem_lines(plan.problems)
    return [*lines, "", f"Summary:  {plan.summary}"]


def problem_lines(problems: list[Any]) -> list[str]:
    """One line per distinct plugin problem, with how often it happened (a hook called per proposal repeats)."""
    counts: dict[tuple[str, str, str], int] = {}
    for p in problems:
        key = (p.plugin, p.hook, p.error)
        counts[key] = counts.get(key, 0) + 1
    return [f"Plugin problem: {plugin}.{hook}: {error}" + (f" (x{n})" if n > 1 else "")
            for (plugin, hook, error), n in counts.items()]
