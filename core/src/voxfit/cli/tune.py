"""``voxfit tune``: every feasible proposal measured here against the current choice; what wins is kept."""

from __future__ import annotations

from typing import Any, Optional

import click

from voxfit.cli.group import Context, build_plan, device_option, emit_json, main
from voxfit.cli.plan import MODEL_HELP
from voxfit.errors import UsageError


@main.command("tune")
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@device_option()
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Round-robin rounds: each loads every proposal afresh and times a short sentence and a paragraph.")
@click.option("--batch", "batch", is_flag=True,
              help="Measure the chosen proposal's batch instead: requests decoded together, 1 up to what memory "
                   "allows; the smallest within 5% of the best throughput is kept.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@click.pass_obj
def tune_cmd(obj: Context, model: Optional[str], device: Optional[str], rounds: int, batch: bool,
             as_json: bool) -> None:
    """Measure every feasible proposal here against the current choice and cache what wins."""
    from voxfit.errors import NoFeasiblePlan
    from voxfit.tuning.tune import tune_plan

    planned = build_plan(obj, model, device, None, no_cache=True)  # tuning measures what is here now
    if planned.plan.chosen is None:
        raise NoFeasiblePlan(planned.plan.summary)
    if batch:
        _tune_batch(planned, rounds, as_json)
        return
    result = tune_plan(planned.host, planned.plan, rounds=rounds)
    chosen = result.plan.chosen.label() if result.plan and result.plan.chosen else None
    if as_json:
        emit_json({"measurements": result.entries, "failed": result.failed,
                    "cache": str(result.path) if result.path else None, "not_saved": result.not_saved,
                    "decision": result.summary, "chosen": chosen})
    else:
        _print_tune(result.entries, result.failed, result.decision)
        if result.path:
            click.echo(f"saved to {result.path}")
        if result.plan is not None:
            click.echo(f"now chosen: {chosen or 'nothing'}")
    # Measurements that cannot be cached are still worth showing: printed above, then the failure.
    if result.not_saved:
        raise UsageError(result.not_saved)


def _print_tune(entries: dict[str, dict[str, Any]], failed: dict[str, str], decision: Any) -> None:
    click.echo(f"{decision.rounds} round-robin rounds; end-to-end seconds (session start + speaking), medians")
    click.echo(f"{'start s':>7}  {'short s':>7}  {'para s':>6}  {'RTF':>6}  proposal")
    for key, e in sorted(entries.items(), key=lambda kv: sum(kv[1]["end_to_end_seconds"].values())):
        mark = "  <- chosen" if key == decision.winner else ("  (control)" if key == decision.control else "")
        short, para = e["end_to_end_seconds"].values()
        click.echo(f"{e['load_seconds']:7.2f}  {short:7.2f}  {para:6.2f}  {e['rtf']:6.3f}  {e['label']}{mark}")
    for label, why in failed.items():
        click.echo(f"  failed  {label}: {why}")
    click.echo(f"decision: {decision.reason}")


def _tune_batch(planned: Any, rounds: int, as_json: bool) -> None:
    from voxfit.tuning.batch import tune_batch

    result, not_saved = tune_batch(planned.host, planned.plan, rounds=rounds)
    if as_json:
        emit_json({"throughput": result.sizes, "batch": result.chosen, "reason": result.reason,
                   "not_saved": not_saved})
    else:
        for size, rate in sorted(result.sizes.items()):
            mark = "  <- chosen" if size == result.chosen else ""
            click.echo(f"batch {size}: {rate:6.2f} audio seconds per second{mark}")
        click.echo(f"decision: {result.reason}")
    if not_saved:
        raise UsageError(not_saved)
