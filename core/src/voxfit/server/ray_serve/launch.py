"""Deploying on Ray Serve: probe the nodes, one deployment per node class, the router in front; drain on SIGTERM.

``voxfit serve --ray`` connects to the cluster named by ``--ray-address`` (or
``RAY_ADDRESS``), or starts a local one; ``serve run
voxfit.server.ray_serve:app_builder`` (or a Serve config file naming it) does
the same deployment from Ray's own tools.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from typing import Any, Callable, Iterator, Optional

from voxfit.errors import UsageError, VoxfitError
from voxfit.server.ray_serve.nodes import NodeClass, parse_autoscale, plan_here, probe_cluster, share_settings
from voxfit.settings import Settings

APP_NAME = "voxfit"
#: Serve checks each replica this often; the directory counts a replica gone after a few missed checks.
HEALTH_CHECK_PERIOD_S = 2.0


def deployments(settings: Settings, classes: list[NodeClass]) -> Any:
    """The Serve application: a VoiceReplica deployment per node class, the router bound to them."""
    from ray import serve

    from voxfit.server.ray_serve.replica import VoiceReplica
    from voxfit.server.ray_serve.router import Router

    voices = len(settings.models) or 1
    ongoing = settings.workers_per_engine * voices  # what a replica runs at once; more wait in Ray's queue
    bound = {}
    for c in classes:
        scaling: dict[str, Any] = {"num_replicas": c.replicas}
        if c.autoscale:
            low, high = (n * len(c.node_ids) for n in c.autoscale)
            scaling = {"autoscaling_config": {
                "min_replicas": low, "initial_replicas": max(low, 1), "max_replicas": high,
                "target_ongoing_requests": ongoing, "upscale_delay_s": 3, "downscale_delay_s": 60}}
        deployment = serve.deployment(VoiceReplica).options(
            name=f"voices-{c.name}", ray_actor_options=c.actor_options(), max_ongoing_requests=ongoing,
            max_queued_requests=settings.max_queue, health_check_period_s=HEALTH_CHECK_PERIOD_S,
            health_check_timeout_s=30, graceful_shutdown_timeout_s=settings.drain_timeout,
            graceful_shutdown_wait_loop_s=0.5, **scaling)
        bound[c.name] = deployment.bind(settings, c.name, c.device_family, ongoing)
    public = [{"name": c.name, "device_family": c.device_family, "nodes": c.node_names, "node_ids": c.node_ids,
               "replicas": c.replicas,
               "autoscale": list(c.autoscale) if c.autoscale else None, "cpu_share": c.cpu_share,
               "request": c.request.as_dict(), "capacity": c.capacity, "runs": c.labels} for c in classes]
    return Router.options(num_replicas=1, ray_actor_options={"num_cpus": 0},
                          max_ongoing_requests=max(64, 8 * sum(c.replicas * ongoing for c in classes))
                          ).bind(settings, public, **bound)


def plan_cluster(settings: Settings, echo: Callable[[str], None]) -> list[NodeClass]:
    autoscale = parse_autoscale(settings.autoscale)
    classes, failed = probe_cluster(settings, settings.replicas, autoscale)
    for line in failed:
        echo(f"note: {line}; no replica goes there")
    if not classes:
        raise UsageError("no node of the Ray cluster could plan these voices: " + ("; ".join(failed) or "no node"))
    return classes


def app_builder(args: dict[str, str]) -> Any:
    """For ``serve run voxfit.server.ray_serve:app_builder model=... replicas=2``: VOXFIT_* settings, then args."""
    import ray

    from voxfit.settings import load_settings

    settings = load_settings(**{k.replace("-", "_"): v for k, v in args.items()})
    if not ray.is_initialized():  # `serve run` builds the app before it connects; the nodes must be probed first
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address=settings.ray_address)
    return deployments(settings, plan_cluster(settings, print))


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """One line, at once, for a cluster address nothing answers at (Ray itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve_on_ray(settings: Settings, *, echo: Callable[[str], None], show_class: Callable[[NodeClass], None],
                 ready: Optional[Callable[[str], None]] = None) -> None:
    """Deploy, report, and wait for a signal; then let in-flight requests finish and take the app down."""
    ray, serve = _import_ray()
    _check_before_start(settings)
    started_here = _connect(ray, settings)
    try:
        classes = plan_cluster(settings, echo)
        for c in classes:
            show_class(c)
        _deploy_until_signalled(serve, settings, classes, echo, ready or echo)
    finally:
        with _quiet_stderr():
            stopped = _bounded(lambda: _take_down(ray, serve, settings, started_here), settings.drain_timeout + 5)
            if not stopped and started_here:
                _kill_children()  # a cluster that does not stop in time (a replica killed earlier, say) is stopped
        if not stopped and started_here:
            echo("stopped the local Ray cluster's processes: it did not shut down in time")
    echo("stopped")


def _take_down(ray: Any, serve: Any, settings: Settings, started_here: bool) -> None:
    from voxfit.server.ray_serve import directory

    serve.delete(APP_NAME)  # replicas finish what they hold, within graceful_shutdown_timeout_s
    directory.remove_actor()
    if started_here:
        serve.shutdown()
        ray.shutdown()


def _bounded(work: Callable[[], None], seconds: float) -> bool:
    """Run ``work`` in a daemon thread for at most ``seconds``; whether it finished (its errors are its own)."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        except Exception:  # noqa: BLE001 - a teardown that fails is finished; the deadline still holds
            pass
        finally:
            done.set()

    threading.Thread(target=run, name="voxfit-ray-teardown", daemon=True).start()
    return done.wait(seconds)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """While the cluster goes down, Ray's C++ core may write to this process's stderr (replicas that cannot
    reach a driver, a controller that lost one): those lines go to /dev/null, and stderr is the user's
    again afterwards (voxfit's own last lines, or its one-line error, are written after it)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _kill_children() -> None:
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise UsageError(f"voxfit serve --ray needs the ray extra ({exc.name} is missing): "
                         "pip install 'voxfit[ray]'") from None
    return ray, serve


def _check_before_start(settings: Settings) -> None:
    """What can be refused in one line is refused before Ray starts (which takes seconds and logs)."""
    if settings.wyoming:
        raise UsageError("--wyoming is not served through Ray: run a voxfit serve --wyoming beside the cluster")
    parse_autoscale(settings.autoscale)
    if settings.ray_address:
        check_reachable(settings.ray_address)


def _connect(ray: Any, settings: Settings) -> bool:
    """Join the cluster, or start a local one; True when this process started it (and must stop it)."""
    # Ray reports usage statistics to its makers unless told not to; voxfit sends nothing anywhere.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_here = settings.ray_address is None and not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    if started_here:
        plan_here(share_settings(settings, 1))  # this machine is the only node: a bad --model is one line, now
    # voxfit prints what happens (and its errors as one line); Ray's own INFO and WARNING lines stay out.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True, logging_level=logging.ERROR)
    return started_here


def _deploy_until_signalled(serve: Any, settings: Settings, classes: list[NodeClass], echo: Callable[[str], None],
                            ready: Callable[[str], None]) -> None:
    port = settings.port or _free_port(settings.host)
    # One HTTP entry, on the head node, at the address printed (per-node proxies: deploy with a Serve config).
    serve.start(proxy_location="HeadOnly", http_options={
        "host": settings.host, "port": port, "request_timeout_s": settings.request_timeout + 10})
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            serve.run(deployments(settings, classes), name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # a replica's constructor raised (a model that does not load, a bad path...)
            raise VoxfitError(f"the replicas could not start: {_deploy_failure(serve, exc)}") from None
        total = sum(c.replicas for c in classes)
        ready(f"listening on http://{settings.host}:{port} (Ray Serve: {total} replica(s) in {len(classes)} node "
              f"class(es); Ray queues up to {settings.max_queue} per class)")
        stop.wait()
        echo(f"stopping: in-flight requests get up to {settings.drain_timeout:g} s")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _deploy_failure(serve: Any, exc: BaseException) -> str:
    """Why Serve gave up on the app, from its status (the replicas' own error, last line), in one line."""
    try:
        app = serve.status().applications.get(APP_NAME)
        reasons = [f"{name}: {_last_line(d.message)}" for name, d in app.deployments.items() if d.message]
    except Exception:  # noqa: BLE001 - the status is a better message, not a required one
        reasons = []
    return "; ".join(reasons) or _last_line(str(exc))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"
