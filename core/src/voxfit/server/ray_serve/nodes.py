"""What each node of the cluster would run: a plan made on every node, nodes grouped by what they chose.

A cluster is rarely uniform, and a replica's Ray resource request must be
known before Ray places it. So before deploying, one light task is pinned to
each alive node (``NodeAffinitySchedulingStrategy``, zero CPUs, no engine
loaded) and runs detect + plan there, for the CPU share each replica will get
on that node. Nodes whose plans agree form a *node class*; each class becomes
one deployment whose resource request comes from that plan
(:func:`voxfit.cluster.requests.replica_request`) and whose replicas may only land on the
class's nodes (a ``label_selector`` on Ray's ``ray.io/node-id`` label). A
replica still plans again when it starts, on the node and with the resources
it was given: the probe only sizes the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from voxfit.cluster.requests import ReplicaRequest
from voxfit.errors import UsageError
from voxfit.settings import Settings


@dataclass
class NodeClass:
    """Nodes whose plans agree, and what one replica there holds and runs."""

    name: str
    device_family: str
    node_ids: list[str]
    node_names: list[str]
    plans: dict[str, dict[str, Any]]  # voice -> plan (as ``voxfit plan --json``)
    request: ReplicaRequest  # what one replica holds, each part with its reason
    capacity: Optional[float]  # estimated audio seconds per wall second of one replica
    cpu_share: int = 1
    replicas_per_node: int = 1
    autoscale: Optional[tuple[int, int]] = None
    labels: list[str] = field(default_factory=list)  # what each voice runs, for people

    @property
    def replicas(self) -> int:
        return self.replicas_per_node * len(self.node_ids)

    def actor_options(self) -> dict[str, Any]:
        # The plan's request, and only this class's nodes (Ray labels every node with its id).
        return {**self.request.ray_options(), "label_selector": {"ray.io/node-id": f"in({','.join(self.node_ids)})"}}

    def describe(self) -> list[str]:
        nodes = ", ".join(self.node_names)
        count = (f"autoscaling {self.autoscale[0] * len(self.node_ids)}-{self.autoscale[1] * len(self.node_ids)}"
                 if self.autoscale else f"{self.replicas}")
        lines = [f"node class {self.name}: {len(self.node_ids)} node(s) ({nodes}), {count} replica(s), "
                 f"{self.cpu_share} core(s) each"]
        lines += [f"  runs {label}" for label in self.labels]
        lines += [f"  holds {why}" for why in self.request.reasons]
        if self.capacity is not None:
            lines.append(f"  ~{self.capacity:.1f} s of audio per second per replica (the plan's RTF estimate)")
        return lines


def parse_autoscale(text: Optional[str]) -> Optional[tuple[int, int]]:
    if not text:
        return None
    low, sep, high = text.partition(":")
    try:
        pair = (int(low), int(high)) if sep else None
    except ValueError:
        pair = None
    if pair is None or pair[0] < 0 or pair[1] < 1 or pair[0] > pair[1]:
        raise UsageError(f"--autoscale {text!r}: expected MIN:MAX replicas per node, 0 <= MIN <= MAX, MAX >= 1")
    return pair


def share_settings(settings: Settings, cpu_share: int) -> Settings:
    """The settings a replica plans with for its share of a node (the node probe plans with the same).

    Its cores count as reserved, so the node's momentary load (Ray, other replicas) does not shrink the plan.
    """
    return settings.model_copy(update={"cpu_budget": cpu_share, "cpu_reserved": True})


def plan_here(settings: Settings) -> dict[str, Any]:
    """Detect and plan every voice on this node (runs as a Ray task on the node it probes)."""
    import socket

    from voxfit.cluster.requests import replica_capacity, replica_request
    from voxfit.plugins import PluginHost
    from voxfit.server.voices import plan_voices

    models: list[Optional[str]] = list(settings.models) or [settings.model]
    planned = plan_voices(settings, models, PluginHost.from_entry_points)
    families = planned[0][2].registry.families
    slots = settings.workers_per_engine
    voices = {}
    for name, _, _, plan in planned:
        request = replica_request(plan, families, slots=slots)
        chosen = plan.chosen
        voices[name] = {
            "plan": plan.model_dump(mode="json"), "label": chosen.label(), "device": chosen.device,
            "family": chosen.device_family,
            "request": request,
            "capacity": replica_capacity(plan, slots=slots),
        }
    return {"hostname": socket.gethostname(), "voices": voices}


def combine(voices: dict[str, dict[str, Any]]) -> ReplicaRequest:
    """One replica serves every voice: the largest CPU and accelerator need among them, their memory summed."""
    requests: list[ReplicaRequest] = [v["request"] for v in voices.values()]
    resources: dict[str, float] = {}
    for r in requests:
        for key, amount in r.resources.items():
            resources[key] = max(resources.get(key, 0.0), amount)
    memory = [r.memory_bytes for r in requests if r.memory_bytes]
    reasons = []
    for name, v in voices.items():
        reasons += [f"{why} (voice {name})" if len(voices) > 1 else why for why in v["request"].reasons]
    return ReplicaRequest(num_cpus=max(r.num_cpus for r in requests), resources=resources,
                          memory_bytes=sum(memory) if memory else None, reasons=reasons)


def group(probes: list[tuple[str, str, int, dict[str, Any]]], replicas_per_node: int,
          autoscale: Optional[tuple[int, int]]) -> list[NodeClass]:
    """Node classes from (node id, node name, cpu share, probe result), nodes with equal plans together."""
    classes: dict[tuple[Any, ...], NodeClass] = {}
    for node_id, node_name, share, probe in probes:
        voices = probe["voices"]
        request = combine(voices)
        key = (tuple((n, v["label"], v["family"]) for n, v in sorted(voices.items())), share,
               request.num_cpus, tuple(sorted(request.resources.items())))
        if key in classes:
            classes[key].node_ids.append(node_id)
            classes[key].node_names.append(node_name)
            continue
        family = next(iter(voices.values()))["family"]
        taken = sum(1 for c in classes.values() if c.device_family == family)
        capacities = [v["capacity"] for v in voices.values()]
        classes[key] = NodeClass(
            name=family if not taken else f"{family}-{taken + 1}", device_family=family,
            node_ids=[node_id], node_names=[node_name], plans={n: v["plan"] for n, v in voices.items()},
            request=request, capacity=min(capacities) if None not in capacities else None, cpu_share=share,
            replicas_per_node=replicas_per_node, autoscale=autoscale,
            labels=[f"voice {n}: {v['label']} on {v['device']}" for n, v in voices.items()])
    return list(classes.values())


def probe_cluster(settings: Settings, replicas_per_node: int,
                  autoscale: Optional[tuple[int, int]]) -> tuple[list[NodeClass], list[str]]:
    """Plan on every alive node; (node classes, one line per node that could not plan)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from voxfit.cluster.requests import cpu_share

    per_node = autoscale[1] if autoscale else replicas_per_node
    task = ray.remote(num_cpus=0, max_retries=0)(plan_here)
    pending = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        cpus = int(node.get("Resources", {}).get("CPU", 0))
        if cpus < 1:
            continue  # a node that offers no CPU (e.g. a head started with --num-cpus=0) hosts no replica
        share = cpu_share(cpus, per_node)
        ref = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            share_settings(settings, share))
        pending.append((node["NodeID"], node.get("NodeManagerAddress", node["NodeID"][:8]), share, ref))
    probes, failed = [], []
    for node_id, address, share, ref in pending:
        try:
            result = ray.get(ref, timeout=120)
        except Exception as exc:  # noqa: BLE001 - any failure on one node is that node's line, not the deploy's
            failed.append(f"node {address}: {_cause(exc)}")
            continue
        probes.append((node_id, f"{result['hostname']} ({address})", share, result))
    return group(probes, replicas_per_node, autoscale), failed


def _cause(exc: BaseException) -> str:
    from voxfit.errors import one_line

    cause = getattr(exc, "cause", None)
    return one_line(cause if isinstance(cause, BaseException) else exc)
