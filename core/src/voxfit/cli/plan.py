"""``voxfit plan`` and ``voxfit cluster``: how a model would run here (or on saved machines), and why."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from voxfit.cli.group import NO_CACHE, Context, build_plan, device_option, emit_json, main

if TYPE_CHECKING:
    from voxfit.models import Plan

MODEL_HELP = "Model, in any format an installed plugin reads (`voxfit engines`); default: the default voice."


def print_plan(plan: Plan) -> None:
    from voxfit.planning.explain import plan_lines

    for line in plan_lines(plan):
        click.echo(line)


@main.command("plan")
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@device_option()
@click.option("--hardware", type=click.Path(path_type=Path), default=None, help="Plan for a saved profile.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@NO_CACHE
@click.pass_obj
def plan_cmd(obj: Context, model: Optional[str], device: Optional[str], hardware: Optional[Path], as_json: bool,
             no_cache: bool) -> None:
    """Show how the model would run here, and why."""
    from voxfit.planning.reuse import remembered

    found = remembered(obj.request(model, device, hardware, no_cache=no_cache))
    if found.entry is not None:  # nothing the plan depends on changed: no settings, plugins or models to load
        if as_json:
            emit_json({**json.loads(found.entry["plan"]), "plan_cache": found.decision.as_dict()})
        else:
            click.echo(found.entry["text"], nl=False)
            click.echo(f"(plan cache: {found.decision.reason})")
        return
    planned = build_plan(obj, model, device, hardware, no_cache=no_cache, found=found)
    planned.remember()
    if as_json:
        emit_json({**planned.plan.model_dump(mode="json"), "plan_cache": planned.cache.as_dict()})
    else:
        print_plan(planned.plan)
    if planned.plan.chosen is None:
        sys.exit(3)


@main.command("cluster")
@click.argument("profiles", nargs=-1, required=True, metavar="PROFILE[*N]...")
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@click.option("--replicas-per-node", "replicas", type=int, default=1, show_default=True,
              help="Replicas sharing each node; each plans with its share of the node's CPUs.")
@click.option("--json", "as_json", is_flag=True, help="Print the simulation as JSON.")
@click.pass_obj
def cluster_cmd(obj: Context, profiles: tuple[str, ...], model: Optional[str], replicas: int, as_json: bool) -> None:
    """Size a cluster of saved hardware profiles (PROFILE*N: N such nodes): each node type's plan, each
    replica's resource request and the capacity they add up to."""
    from voxfit.cluster import simulate
    from voxfit.planning.hardware import load_profile

    nodes = simulate.parse_nodes(profiles)

    def plan_for(path: Path, cpu_budget: Optional[int]) -> tuple[Any, Any]:
        planned = build_plan(obj, model, None, path, cpu_budget)  # exactly `voxfit plan --hardware PATH`
        return planned.plan, planned.host.registry.families

    simulate.simulate(nodes, plan_for, load_profile, replicas)
    if as_json:
        emit_json(simulate.as_dict(nodes, replicas))
        return
    for line in simulate.lines(nodes, replicas):
        click.echo(line)
