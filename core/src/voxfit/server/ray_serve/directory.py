"""Which replicas are serving, where, and with what plan: a small named Ray actor.

Ray's router hides replicas from callers (a handle call goes to one of them,
by Ray's choice), so the cluster-wide ``/v1/plan`` cannot ask each replica.
Instead every replica writes its entry here once it has planned and loaded, and
refreshes it from Serve's periodic health check; an entry not refreshed within
``stale_after`` seconds belongs to a replica that died or was stopped, and is
not shown. The actor is detached and found by name, so it serves a deployment
started by ``voxfit serve --ray``, ``serve run`` or a Serve config file alike.
"""

from __future__ import annotations

import time
from typing import Any, Optional

NAME = "voxfit-replica-directory"
NAMESPACE = "voxfit"


class ReplicaDirectory:
    """replica id -> its entry (node, plans, readiness) and when it last reported."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, float] = {}

    def put(self, replica: str, entry: dict[str, Any]) -> None:
        self.entries[replica] = entry
        self.seen[replica] = time.monotonic()

    def touch(self, replica: str, ready: bool = True, reasons: Optional[list[str]] = None) -> None:
        if replica in self.entries:
            self.entries[replica]["ready"] = ready
            self.entries[replica]["reasons"] = reasons or []
            self.seen[replica] = time.monotonic()

    def remove(self, replica: str) -> None:
        self.entries.pop(replica, None)
        self.seen.pop(replica, None)

    def live(self, stale_after: float) -> list[dict[str, Any]]:
        now = time.monotonic()
        for replica in [r for r, t in self.seen.items() if now - t > stale_after]:
            self.remove(replica)
        return [dict(self.entries[r], replica=r, seconds_since_report=round(now - self.seen[r], 1))
                for r in sorted(self.entries)]


def handle(create: bool = True) -> Any:
    """The directory actor (created on first use when ``create``)."""
    import ray

    if not create:
        return ray.get_actor(NAME, namespace=NAMESPACE)
    actor = ray.remote(num_cpus=0, max_restarts=-1)(ReplicaDirectory)
    return actor.options(name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()


def remove_actor() -> None:
    import ray

    try:
        ray.kill(ray.get_actor(NAME, namespace=NAMESPACE))
    except ValueError:
        pass  # never created
