"""One Ray Serve replica: plans on its node, loads there, and serves the ``voxfit serve`` app.

The replica plans within what Ray gave it: its CPU share becomes the plan's
CPU budget (so a replica that holds 1 CPU runs 1 thread), and it is locked to
the device family its node class planned, so a replica that holds no GPU
never proposes one (Ray hides no GPU from a replica that holds none: NVML
would still list them). A replica that holds GPUs sees only those, through
the visible-devices variable Ray sets and the hardware plugin honours.

Requests arrive from the router through a deployment handle and run through
the same FastAPI app as on one machine (:mod:`.asgi_call`). Ray admits them
(``max_ongoing_requests``); the app's own queue per voice is sized so that
nothing Ray admitted is turned away inside the replica.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional

from voxfit.server.ray_serve import directory
from voxfit.server.ray_serve.asgi_call import ForwardedRequest, Piece, ResponseStart, call_app
from voxfit.server.ray_serve.nodes import share_settings
from voxfit.settings import Settings


def replica_settings(settings: Settings, assigned: dict[str, float], device_family: str, ongoing: int) -> Settings:
    """The settings a replica plans with: its CPU share, its node class's device family, its queue."""
    cpus = max(1, int(assigned.get("CPU", 0) or 0))
    return share_settings(settings, cpus).model_copy(
        update={"device": device_family, "max_queue": ongoing, "port": 0, "wyoming": None})


class VoiceReplica:
    """The deployment class (wrapped with ``serve.deployment`` by :mod:`.launch`)."""

    def __init__(self, settings: Settings, node_class: str, device_family: str, ongoing: int) -> None:
        import os
        import socket

        import ray
        from ray import serve

        from voxfit.plugins import PluginHost
        from voxfit.server.app import ServerState, create_app
        from voxfit.server.metrics import ServerMetrics
        from voxfit.server.voices import check_memory, fit_concurrency, load_voices, plan_voices

        context = ray.get_runtime_context()
        self.settings = replica_settings(settings, context.get_assigned_resources(), device_family, ongoing)
        self.id = serve.get_replica_context().replica_id.unique_id
        models: list[Optional[str]] = list(self.settings.models) or [self.settings.model]
        planned = plan_voices(self.settings, models, PluginHost.from_entry_points)
        check_memory([(n, p) for n, _, _, p in planned], self.settings.workers_per_engine,
                     self.settings.memory_headroom)
        self.voices = load_voices(planned, self.settings.workers_per_engine, dict(self.settings.voice_aliases))
        fit_concurrency(self.voices, self.settings.memory_headroom)
        self.metrics = ServerMetrics(self.settings.metrics_log)
        self.state = ServerState(self.voices, self.settings, self.metrics)
        self.app = create_app(self.state)
        entry = {
            "node_class": node_class, "node_id": context.get_node_id(), "hostname": socket.gethostname(),
            "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
            "resources": context.get_assigned_resources(),
            "voices": {v.name: {"engine": v.sessions[0].loaded.proposal.label(),
                                "device": v.sessions[0].loaded.proposal.device,
                                "load_seconds": round(v.sessions[0].load_seconds, 3),
                                "plan": v.plan.model_dump(mode="json")} for v in self.voices},
            "ready": True, "reasons": [],
        }
        self.directory = directory.handle()
        ray.get(self.directory.put.remote(self.id, entry), timeout=30)

    async def http(self, request: ForwardedRequest) -> AsyncIterator[Piece]:
        async for piece in call_app(self.app, request):
            if isinstance(piece, ResponseStart):  # which replica answered: for logs, clients and tests
                piece = ResponseStart(piece.status, (*piece.headers, (b"x-voxfit-replica", self.id.encode())))
            yield piece

    def dead_reasons(self) -> list[str]:
        return [f"voice {name} is out of service: {pool.dead_reason}"
                for name, pool in self.state.pools.items() if pool.dead_reason is not None]

    async def check_health(self) -> None:
        """Serve calls this every few seconds: report to the directory; raise (be replaced) if a voice died."""
        reasons = self.dead_reasons()
        self.directory.touch.remote(self.id, not reasons, reasons)
        if reasons:
            raise RuntimeError("; ".join(reasons))

    def __del__(self) -> None:
        state: Any = getattr(self, "state", None)
        if state is not None:
            state.close()
        from voxfit.server.voices import close_voices

        close_voices(getattr(self, "voices", []))
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.close()
        entry = getattr(self, "directory", None)
        if entry is not None:
            try:
                entry.remove.remote(self.id)
            except Exception:  # noqa: BLE001 - the cluster may be going down; the entry goes stale anyway
                pass
