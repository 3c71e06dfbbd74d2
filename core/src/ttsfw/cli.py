"""The ``ttsfw`` command line.

Every failure the user can cause ends as one ``error: ...`` line on stderr
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click

from . import __version__
from .errors import TtsfwError, UsageError
from .hardware import describe_memory
from .models import HardwareProfile, Plan, Proposal
from .settings import Settings, load_settings


class Context:
    """What the group options decided, handed to every subcommand."""

    def __init__(self, blocked: list[str], allowed: list[str], strict: Optional[bool]) -> None:
        self.blocked, self.allowed, self.strict = blocked, allowed, strict

    def settings(self, **overrides: Any) -> Settings:
        base = load_settings(strict=self.strict, **overrides)
        update: dict[str, Any] = {}
        if self.blocked:
            update["block_plugins"] = sorted(set(base.block_plugins) | set(self.blocked))
        if self.allowed:
            update["allow_plugins"] = sorted(set(base.allow_plugins or []) | set(self.allowed))
        return base.model_copy(update=update) if update else base

    def host(self, settings: Settings):  # -> PluginHost
        from .plugins import PluginHost

        return PluginHost.from_entry_points(settings)


def _parse_plugin_options(values: tuple[str, ...]) -> list[str]:
    blocked = []
    for value in values:
        if not value.startswith("no:") or not value[3:]:
            raise UsageError(f"-p expects no:NAME to block a plugin, got {value!r}")
        blocked.append(value[3:])
    return blocked


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ttsfw")
@click.option("-p", "plugin_options", multiple=True, metavar="no:NAME", help="Block a plugin by name (repeatable).")
@click.option("--allow-plugin", "allowed", multiple=True, metavar="NAME", help="Load only these plugins (repeatable).")
@click.option("--strict/--no-strict", default=None, help="Turn plugin failures into errors (TTSFW_STRICT).")
@click.pass_context
def main(ctx: click.Context, plugin_options: tuple[str, ...], allowed: tuple[str, ...], strict: Optional[bool]) -> None:
    """Hardware-aware runtime for neural text-to-speech."""
    ctx.obj = Context(_parse_plugin_options(plugin_options), list(allowed), strict)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- plugins -----------------------------------------------------------------


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plugins_cmd(obj: Context, as_json: bool) -> None:
    """List the plugins found, what they implement and their status."""
    host = obj.host(obj.settings())
    if as_json:
        _emit_json([info.model_dump(mode="json") for info in host.infos])
        return
    if not host.infos:
        click.echo("no plugins installed (pip install 'ttsfw[all]')")
        return
    rows = [("NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS")]
    for info in host.infos:
        rows.append(
            (info.name, info.distribution or "-", info.version or "-", info.status, ", ".join(info.hooks) or "-")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for info, row in zip([None, *host.infos], rows, strict=True):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
        if info is not None and info.error:
            click.echo(f"    {info.status}: {info.error}")


# -- detect ------------------------------------------------------------------


def _device_line(d: Any) -> str:
    memory = ""
    if d.memory_total_bytes is not None:
        memory = f", {describe_memory(d.memory_free_bytes)} free of {describe_memory(d.memory_total_bytes)}"
    util = f", {d.utilization_percent:.0f}% busy" if d.utilization_percent is not None else ""
    caps = ", ".join(f"{k}={v}" for k, v in d.capabilities.items())
    flags = f" [{', '.join(d.flags)}]" if d.flags else ""
    return f"  {d.id}: {d.name}{memory}{util}{flags}" + (f"\n      {caps}" if caps else "") + f"  (by {d.detected_by})"


def _print_hardware(hw: HardwareProfile) -> None:
    click.echo(f"OS:       {hw.os} {hw.os_release} ({hw.arch}), Python {hw.python}")
    click.echo(f"CPU:      {hw.cpu_model}, {hw.cores_physical} physical / {hw.cores_logical} logical cores")
    if hw.isa_flags:
        click.echo(f"ISA:      {' '.join(hw.isa_flags)}")
    click.echo(
        f"Memory:   {describe_memory(hw.memory_available_bytes)} available of {describe_memory(hw.memory_total_bytes)}"
    )
    if hw.flags:
        click.echo("Flags:    " + ", ".join(f"{k}={v}" for k, v in hw.flags.items()))
    click.echo("Devices:" + ("" if hw.devices else "  none reported by plugins"))
    for device in hw.devices:
        click.echo(_device_line(device))
    for note in hw.notes:
        click.echo(f"  note: {note}")
    if hw.source != "detected":
        click.echo(f"Source:   {hw.source}")


@main.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON (what `plan --hardware` accepts).")
@click.pass_obj
def detect_cmd(obj: Context, as_json: bool) -> None:
    """Describe this machine as the plugins see it."""
    from .planner import detect

    host = obj.host(obj.settings())
    profile = detect(host)
    if as_json:
        _emit_json(profile.model_dump(mode="json"))
        return
    _print_hardware(profile)
    for problem in host.problems:
        click.echo(f"plugin problem: {problem.plugin}.{problem.hook}: {problem.error}", err=True)


# -- plan --------------------------------------------------------------------


def _estimate(p: Proposal) -> str:
    e = p.estimate
    parts = []
    if e.rtf is not None:
        parts.append(f"RTF ~{e.rtf:.2f}")
    if e.tokens_per_s is not None:
        parts.append(f"~{e.tokens_per_s:.1f} tokens/s")
    if e.peak_memory_bytes is not None:
        parts.append(f"peak ~{describe_memory(e.peak_memory_bytes)}")
    return ", ".join(parts) or "no estimate"


def _print_entry(marker: str, headline: str, reasons: list[str]) -> None:
    click.echo(f"  {marker} {headline}")
    for reason in reasons:
        click.echo(f"       - {reason}")


def print_plan(plan: Plan) -> None:
    m = plan.model
    params = f", {m.parameter_count / 1e6:.1f} M parameters" if m.parameter_count else ""
    rate = f", {m.sample_rate} Hz" if m.sample_rate else ""
    click.echo(f"Model:    {m.family} {m.name} ({m.source}{params}{rate})")
    hw = plan.hardware
    devices = ", ".join(d.id for d in hw.devices) or "none"
    click.echo(
        f"Hardware: {hw.os} {hw.arch}, {hw.cpu_model}, {describe_memory(hw.memory_available_bytes)} RAM free;"
        f" devices: {devices}" + ("" if hw.source == "detected" else f" (from {hw.source})")
    )
    click.echo(f"Device:   {plan.device_lock}" + (" (locked)" if plan.device_lock != "auto" else ""))
    click.echo("")
    if plan.chosen:
        c = plan.chosen
        click.echo(f"Chosen:   {c.label()}  score {c.score:.2f}  ({_estimate(c)})")
        for reason in c.reasons:
            click.echo(f"  - {reason}")
    else:
        click.echo("Chosen:   nothing")
    if plan.alternatives:
        click.echo("Alternatives:")
        for i, p in enumerate(plan.alternatives, start=2):
            _print_entry(f"{i}.", f"{p.label()}  score {p.score:.2f}  ({_estimate(p)})", p.reasons)
    if plan.rejected:
        click.echo("Vetoed:")
        for r in plan.rejected:
            _print_entry("x", f"{r.proposal.label()}  ({_estimate(r.proposal)})", r.reasons)
    if plan.env_changes:
        click.echo("Environment changes:")
        for change in plan.env_changes:
            click.echo(f"  - {change.describe()}")
    for problem in plan.problems:
        click.echo(f"Plugin problem: {problem.plugin}.{problem.hook}: {problem.error}")
    click.echo("")
    click.echo(f"Summary:  {plan.summary}")


def build_plan(obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path]):
    """Settings -> plugins -> plan; shared by `plan` and `run`."""
    from .planner import make_plan

    settings = obj.settings(model=model, device=device)
    host = obj.host(settings)
    return host, make_plan(host, hardware_file=hardware)


@main.command("plan")
@click.option("--model", "-m", default=None, help="Model path (default: the embedded voice).")
@click.option("--device", "-d", default=None, help="auto, cpu, cuda or mps: a hard constraint.")
@click.option("--hardware", type=click.Path(path_type=Path), default=None, help="Plan for a saved profile.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
def plan_cmd(
    obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path], as_json: bool
) -> None:
    """Show how the model would run here, and why."""
    _, plan = build_plan(obj, model, device, hardware)
    if as_json:
        _emit_json(plan.model_dump(mode="json"))
    else:
        print_plan(plan)
    if plan.chosen is None:
        sys.exit(3)


def run() -> None:
    """Console entry point: turn every expected failure into one line and an exit code."""
    try:
        main.main(standalone_mode=False)
    except TtsfwError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
