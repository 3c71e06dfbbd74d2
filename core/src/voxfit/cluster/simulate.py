"""``voxfit cluster``: size a cluster from saved hardware profiles before renting it.

Each node type is planned as ``voxfit plan --hardware PROFILE`` would plan it
(the CLI hands in its own plan-building function), with each replica's share
of the node's CPUs as the CPU budget when several replicas share a node. The
plan gives each replica's request (:func:`voxfit.cluster.requests.replica_request`) and
capacity; this module counts how many replicas fit and adds capacity up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from voxfit.cluster.requests import ReplicaRequest, cpu_share, replica_capacity, replica_request
from voxfit.errors import UsageError
from voxfit.models import HardwareProfile, Plan
from voxfit.registry import DeviceFamilyInfo

#: plan_for(profile path, CPU budget or None) -> (plan, the host's device families)
PlanFor = Callable[[Path, Optional[int]], "tuple[Plan, Mapping[str, DeviceFamilyInfo]]"]


@dataclass
class NodeType:
    """One distinct profile, how many such nodes, and what planning it gave."""

    path: Path
    count: int
    profile: Optional[HardwareProfile] = None
    replicas: int = 0  # replicas that fit on one node
    cpu_budget: Optional[int] = None
    plan: Optional[Plan] = None
    request: Optional[ReplicaRequest] = None
    capacity_per_replica: Optional[float] = None
    notes: list[str] = field(default_factory=list)
    failure: Optional[str] = None

    @property
    def capacity(self) -> float:
        """Audio seconds per wall second from all nodes of this type (0 when it fails or has no estimate)."""
        return (self.capacity_per_replica or 0.0) * self.replicas * self.count


def parse_node(argument: str) -> tuple[Path, int]:
    """``PATH`` or ``PATH*N`` (N such nodes) -> (path, N)."""
    path, star, count = argument.rpartition("*")
    if not star:
        return Path(argument), 1
    if Path(argument).exists():  # a file whose name really has a star in it
        return Path(argument), 1
    if not count.isdigit() or int(count) < 1 or not path:
        raise UsageError(f"bad node count in {argument!r}: write PROFILE*N with N a whole number of nodes >= 1")
    return Path(path), int(count)


def parse_nodes(arguments: tuple[str, ...]) -> list[NodeType]:
    """Node types in the order given; the same profile named twice adds its counts up."""
    nodes: dict[Path, NodeType] = {}
    for argument in arguments:
        path, count = parse_node(argument)
        key = path.resolve()
        if key in nodes:
            nodes[key].count += count
        else:
            nodes[key] = NodeType(path=path, count=count)
    return list(nodes.values())


def simulate(nodes: list[NodeType], plan_for: PlanFor, load: Callable[[Path], HardwareProfile],
             replicas_per_node: int) -> list[NodeType]:
    """Plan every node type (every profile is read first: a broken one stops the run before any planning)."""
    if replicas_per_node < 1:
        raise UsageError(f"--replicas-per-node must be at least 1, got {replicas_per_node}")
    for node in nodes:
        node.profile = load(node.path)
    for node in nodes:
        _plan_node(node, plan_for, replicas_per_node)
    return nodes


def _plan_node(node: NodeType, plan_for: PlanFor, wanted: int) -> None:
    profile = node.profile
    assert profile is not None
    cpus = profile.cores_logical or profile.cores_physical or 1  # the scheduler counts logical CPUs
    if wanted > 1:
        node.cpu_budget = cpu_share(cpus, wanted)
        node.notes.append(f"each replica plans with a CPU budget of {node.cpu_budget}: {cpus} logical CPUs "
                          f"shared by {wanted} replicas")
    node.plan, families = plan_for(node.path, node.cpu_budget)
    if node.plan.chosen is None:
        node.failure = f"the plan chose nothing: {node.plan.summary}"
        return
    node.request = replica_request(node.plan, families)
    node.capacity_per_replica = replica_capacity(node.plan)
    if node.capacity_per_replica is None:
        node.notes.append("the chosen proposal has no RTF estimate: its capacity is unknown and counted as 0")
    node.replicas, why = _replicas_that_fit(node.request, profile, families, wanted)
    if why:
        node.notes.append(why)
    if node.replicas > 1 and node.request.resources:
        # Every replica plans alike here; on the cluster the scheduler gives each its own device.
        node.notes.append(f"the scheduler gives each replica its own device; all are assumed to perform like "
                          f"{node.plan.chosen.device}, the one this plan chose")


def _replicas_that_fit(request: ReplicaRequest, profile: HardwareProfile, families: Mapping[str, DeviceFamilyInfo],
                       wanted: int) -> tuple[int, str]:
    """How many of the wanted replicas one node can hold, and why fewer (a scheduler would leave them pending)."""
    limits = [(wanted, "")]
    for resource, amount in request.resources.items():
        have = sum(1 for d in profile.devices
                   if (info := families.get(d.family)) is not None and info.cluster_resource == resource)
        limits.append((int(have // amount), f"the node has {have} device{'s' if have != 1 else ''} giving "
                                            f"{resource} and each replica holds {amount:g}"))
    cpus = profile.cores_logical or profile.cores_physical
    if cpus:
        limits.append((int(cpus // request.num_cpus), f"the node has {cpus} logical CPUs and each replica "
                                                      f"holds {request.num_cpus:g}"))
    ram = profile.memory_available_bytes or profile.memory_total_bytes  # what the profile saw free, as the plan does
    if request.memory_bytes and ram:
        limits.append((ram // request.memory_bytes, f"the node's {ram / 2**30:.1f} GiB of free RAM holds "
                                                    f"{ram // request.memory_bytes} replica peak(s) of "
                                                    f"{request.memory_bytes / 2**30:.1f} GiB"))
    fit, why = min(limits, key=lambda limit: limit[0])
    if fit >= wanted:
        return wanted, ""
    return fit, f"only {fit} of {wanted} replicas fit on one node: {why}"


# -- output ----------------------------------------------------------------------


def total_capacity(nodes: list[NodeType]) -> float:
    return sum(node.capacity for node in nodes)


def as_dict(nodes: list[NodeType], replicas_per_node: int) -> dict[str, Any]:
    return {
        "replicas_per_node": replicas_per_node,
        "model": _model_name(nodes),
        "nodes": [_node_dict(node) for node in nodes],
        "total": {"nodes": sum(n.count for n in nodes), "replicas": sum(n.replicas * n.count for n in nodes),
                  "audio_seconds_per_second": round(total_capacity(nodes), 3)},
    }


def _node_dict(node: NodeType) -> dict[str, Any]:
    chosen = node.plan.chosen if node.plan else None
    return {
        "profile": str(node.path), "count": node.count, "replicas_per_node": node.replicas,
        "cpu_budget": node.cpu_budget,
        "chosen": chosen.label() if chosen else None, "device": chosen.device if chosen else None,
        "rtf": chosen.estimate.rtf if chosen else None,
        "request": node.request.as_dict() if node.request else None,
        "ray_options": node.request.ray_options() if node.request else None,
        "capacity_per_replica": _round(node.capacity_per_replica),
        "capacity": round(node.capacity, 3), "notes": list(node.notes), "failure": node.failure,
    }


def lines(nodes: list[NodeType], replicas_per_node: int) -> list[str]:
    out = [f"Model:    {_model_name(nodes)}", f"Replicas: {replicas_per_node} per node wanted", ""]
    for node in nodes:
        out.extend(_node_lines(node))
        out.append("")
    replicas = sum(n.replicas * n.count for n in nodes)
    out.append(f"Cluster:  {sum(n.count for n in nodes)} nodes, {replicas} replicas, "
               f"~{total_capacity(nodes):.1f} audio seconds per second (estimates from each plan's RTF, "
               "unmeasured; failed nodes and unknown estimates count 0)")
    return out


def _node_lines(node: NodeType) -> list[str]:
    profile = node.profile
    assert profile is not None
    devices = ", ".join(d.id for d in profile.devices) or "none"
    out = [f"{node.path} x {node.count} node{'s' if node.count != 1 else ''}: {profile.cpu_model}, "
           f"{profile.cores_physical} physical / {profile.cores_logical} logical cores; devices: {devices}"]
    out.extend(f"  note: {note}" for note in node.notes)
    if node.failure or node.plan is None or node.plan.chosen is None or node.request is None:
        return [*out, f"  FAILED: {node.failure} (counted as 0)"]
    chosen, request = node.plan.chosen, node.request
    rtf = f"RTF ~{chosen.estimate.rtf:.2f}" if chosen.estimate.rtf is not None else "no RTF estimate"
    memory = f", memory {request.memory_bytes / 2**30:.2f} GiB" if request.memory_bytes is not None else ""
    gpus = "".join(f", {amount:g} {name}" for name, amount in request.resources.items())
    out.append(f"  chosen:   {chosen.label()} (device {chosen.device}, {rtf})")
    out.append(f"  request:  {request.num_cpus:g} CPU{'s' if request.num_cpus != 1 else ''}{gpus}{memory}")
    out.extend(f"    - {reason}" for reason in request.reasons)
    per = node.capacity_per_replica
    each = f"{per:.2f}" if per is not None else "unknown (no RTF estimate)"
    out.append(f"  capacity: {each} audio s/s per replica x {node.replicas} replica{'s' if node.replicas != 1 else ''}"
               f" x {node.count} node{'s' if node.count != 1 else ''} = {node.capacity:.2f}")
    return out


def _model_name(nodes: list[NodeType]) -> str:
    plan = next((n.plan for n in nodes if n.plan is not None), None)
    if plan is None:
        return "?"
    m = plan.model
    return f"{m.family} {m.name} ({m.source})"


def _round(value: Optional[float]) -> Optional[float]:
    return round(value, 3) if value is not None else None
