"""``voxfit plugins`` and ``voxfit engines``: what is installed and what it registered."""

from __future__ import annotations

from typing import Any

import click

from voxfit.cli.group import Context, emit_json, main


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plugins_cmd(obj: Context, as_json: bool) -> None:
    """List the plugins found, what they implement and their status."""
    host = obj.host(obj.settings())
    if as_json:
        emit_json([info.model_dump(mode="json") for info in host.infos])
        return
    if not host.infos:
        click.echo("no plugins installed (pip install 'voxfit[all]')")
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


def engine_rows(registry: Any) -> list[dict[str, Any]]:
    """Each registered engine with its voice options documented (type, range, default, description)."""
    from dataclasses import asdict

    from voxfit.options import option_docs

    rows = []
    for info in sorted(registry.engines.values(), key=lambda e: e.backend):
        pacing = registry.pacing_for(info.backend)
        rows.append({
            "engine": info.backend, "plugin": info.plugin, "families": sorted(info.families),
            "requires": list(info.requires), "programs": list(info.programs), "description": info.description,
            "options": [asdict(doc) for doc in option_docs(registry.options_for(info.backend))],
            "speed": f"{pacing.length_option} = 1 / speed" if pacing else None,
        })
    return rows


@main.command("engines")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def engines_cmd(obj: Context, as_json: bool) -> None:
    """List the engines the plugins registered, the model families they run and their voice options."""
    from voxfit.options import OptionDoc

    host = obj.host(obj.settings())
    rows = engine_rows(host.registry)
    if as_json:
        emit_json({"engines": rows, "device_families": sorted(host.registry.families)})
        return
    for row in rows:
        families = ", ".join(row["families"]).replace("*", "any")
        click.echo(f"{row['engine']}  (plugin {row['plugin']}; runs {families} models)")
        click.echo(f"    {row['description']}")
        click.echo("    voice options (--NAME VALUE or -O NAME=VALUE):" + ("" if row["options"] else " none"))
        for doc in row["options"]:
            click.echo(f"      {OptionDoc(**doc).line()}")
        if row["speed"]:
            click.echo(f"    speed: {row['speed']}")
    click.echo("device families: " + ", ".join(sorted(host.registry.families)))
    for problem in host.problems:
        click.echo(f"plugin problem: {problem.plugin}.{problem.hook}: {problem.error}", err=True)
