"""``voxfit detect``: this machine as the plugins see it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from voxfit.cli.group import Context, describe_memory, emit_json, main

if TYPE_CHECKING:
    from voxfit.models import HardwareProfile


def _device_line(d: Any) -> str:
    memory = ""
    if d.memory_total_bytes is not None:
        memory = f", {describe_memory(d.memory_free_bytes)} free of {describe_memory(d.memory_total_bytes)}"
    util = f", {d.utilization_percent:.0f}% busy" if d.utilization_percent is not None else ""
    caps = ", ".join(f"{k}={v}" for k, v in d.capabilities.items())
    flags = f" [{', '.join(d.flags)}]" if d.flags else ""
    return f"  {d.id}: {d.name}{memory}{util}{flags}" + (f"\n      {caps}" if caps else "") + f"  (by {d.detected_by})"


def print_hardware(hw: HardwareProfile) -> None:
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
    from voxfit.planning.planner import detect

    host = obj.host(obj.settings())
    profile = detect(host)
    if as_json:
        emit_json(profile.model_dump(mode="json"))
        return
    print_hardware(profile)
    for problem in host.problems:
        click.echo(f"plugin problem: {problem.plugin}.{problem.hook}: {problem.error}", err=True)
