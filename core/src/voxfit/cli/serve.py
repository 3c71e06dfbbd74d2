"""``voxfit serve``: speech over HTTP (an OpenAI-compatible API, voxfit's own route, a page) and Wyoming."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from voxfit.cli.group import Context, device_option, main
from voxfit.cli.plan import print_plan
from voxfit.errors import UsageError

if TYPE_CHECKING:
    from voxfit.models import Plan
    from voxfit.settings import Settings


@main.command("serve")
@click.option("--model", "-m", "models", multiple=True,
              help="A model to offer as a voice (repeatable; VOXFIT_MODELS; default: VOXFIT_MODEL or the default voice).")
@device_option()
@click.option("--host", default=None, help="Address to listen on (VOXFIT_HOST; default 127.0.0.1, loopback only).")
@click.option("--port", type=int, default=None, help="Port (VOXFIT_PORT; default 8000; 0 picks a free one).")
@click.option("--workers-per-engine", type=int, default=None,
              help="Engines loaded per voice; each runs one request at a time, or several if it speaks "
                   "concurrently (VOXFIT_WORKERS_PER_ENGINE; default 1).")
@click.option("--max-queue", type=int, default=None,
              help="Requests that may wait per voice; more get 503 + Retry-After (VOXFIT_MAX_QUEUE; default 8).")
@click.option("--request-timeout", type=float, default=None,
              help="Seconds a request may take, queue included (VOXFIT_REQUEST_TIMEOUT; default 120).")
@click.option("--drain-timeout", type=float, default=None,
              help="Seconds in-flight requests get after SIGTERM (VOXFIT_DRAIN_TIMEOUT; default 30).")
@click.option("--replan-window", type=float, default=None,
              help="Seconds the CPU load must differ from a plan's before that voice is re-planned "
                   "(VOXFIT_REPLAN_WINDOW; default 10; 0 never).")
@click.option("--api-key", default=None,
              help="Require Authorization: Bearer KEY on every route but /health (prefer VOXFIT_API_KEY: "
                   "arguments show in ps).")
@click.option("--metrics-log", type=click.Path(path_type=Path), default=None,
              help="Append one JSON line per request to this file (VOXFIT_METRICS_LOG).")
@click.option("--max-input-chars", type=int, default=None,
              help="Longest text per request (VOXFIT_MAX_INPUT_CHARS; default 4096, as OpenAI's).")
@click.option("--voice-alias", "aliases", multiple=True, metavar="ALIAS=VOICE",
              help="Another name for a voice, e.g. alloy=VOICE (repeatable; VOXFIT_VOICE_ALIASES).")
@click.option("--wyoming", default=None, metavar="tcp://HOST:PORT",
              help="Also serve the Wyoming protocol for Home Assistant, e.g. tcp://127.0.0.1:10200 (VOXFIT_WYOMING).")
@click.option("--http/--no-http", "http", default=None,
              help="Serve HTTP (default); --no-http with --wyoming serves Wyoming alone (VOXFIT_HTTP).")
@click.option("--ray/--no-ray", "ray", default=None,
              help="Serve on Ray Serve: each replica plans on its node (VOXFIT_RAY).")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (VOXFIT_RAY_ADDRESS; default RAY_ADDRESS, else a new local cluster).")
@click.option("--replicas", type=int, default=None, help="With --ray: replicas per node (VOXFIT_REPLICAS; default 1).")
@click.option("--autoscale", default=None, metavar="MIN:MAX",
              help="With --ray: MIN to MAX replicas per node, scaled on queue length (VOXFIT_AUTOSCALE).")
@click.pass_obj
def serve_cmd(obj: Context, models: tuple[str, ...], aliases: tuple[str, ...], **flags: Any) -> None:
    """Serve speech over HTTP (an OpenAI-compatible API, voxfit's own route, a page at /) and Wyoming."""
    try:
        from voxfit.server.run import serve
    except ImportError as exc:
        raise UsageError(f"voxfit serve needs the serve extra ({exc.name} is missing): "
                         "pip install 'voxfit[serve]'") from None
    settings = obj.settings(models=list(models) or None, voice_aliases=list(aliases) or None, **flags)

    def show_plan(name: str, plan: Plan) -> None:
        click.echo(f"== voice {name}")
        print_plan(plan)
        click.echo("")

    def echo(line: str) -> None:
        click.echo(line, err=True)

    if settings.ray:
        _serve_on_ray(settings, echo)
        return
    serve(settings, obj.host, echo=echo, show_plan=show_plan, ready=lambda line: click.echo(line))


def _serve_on_ray(settings: Settings, echo: Any) -> None:
    try:
        from voxfit.server.ray_serve import serve_on_ray
    except ImportError as exc:
        raise UsageError(f"voxfit serve --ray needs the ray extra ({exc.name} is missing): "
                         "pip install 'voxfit[ray]'") from None

    def show_class(node_class: Any) -> None:
        for line in node_class.describe():
            click.echo(line)
        click.echo("")

    serve_on_ray(settings, echo=echo, show_class=show_class, ready=lambda line: click.echo(line))
