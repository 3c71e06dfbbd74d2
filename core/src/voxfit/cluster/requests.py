"""What one serving replica must hold on a cluster, and what it delivers, read from its plan.

A replica plans on the node it lands on; its scheduler request (CPUs,
accelerators, memory) then comes from that plan, not from a constant: a
replica whose plan chose the CPU holds no GPU. Which scheduler resource a
device family needs is the family's own registration
(``DeviceFamilyInfo.cluster_resource``, "GPU" for CUDA): nothing here knows a
hardware name. The names are Ray's (``num_cpus``, ``num_gpus``, ``memory``,
custom ``resources``), but Ray is never imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from voxfit.errors import NoFeasiblePlan
from voxfit.models import Plan, Proposal
from voxfit.registry import DeviceFamilyInfo

#: The accelerator resource Ray takes as ``num_gpus`` rather than among custom ``resources``.
RAY_GPU = "GPU"


@dataclass(frozen=True)
class ReplicaRequest:
    """A replica's resource request, each part with the sentence that explains it."""

    num_cpus: float
    resources: dict[str, float] = field(default_factory=dict)  # accelerators, e.g. {"GPU": 1.0}
    memory_bytes: Optional[int] = None  # system RAM only: device memory is not Ray's "memory"
    reasons: list[str] = field(default_factory=list)

    @property
    def num_gpus(self) -> float:
        return self.resources.get(RAY_GPU, 0.0)

    def ray_options(self) -> dict[str, Any]:
        """The same request as Ray's actor options (``ray_actor_options`` of a Serve deployment)."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        custom = {name: amount for name, amount in self.resources.items() if name != RAY_GPU}
        if custom:
            options["resources"] = custom
        if self.memory_bytes is not None:
            options["memory"] = self.memory_bytes
        return options

    def as_dict(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources),
                "memory_bytes": self.memory_bytes, "reasons": list(self.reasons)}


def replica_request(plan: Plan, families: Mapping[str, DeviceFamilyInfo], slots: int = 1) -> ReplicaRequest:
    """What a replica running ``plan``'s chosen proposal in ``slots`` engines at once must hold.

    ``families`` is the plugin host's registry of device families
    (``host.registry.families``). Raises :class:`NoFeasiblePlan` when the
    plan chose nothing: such a replica cannot serve, whatever it holds.
    """
    _check_slots(slots)
    chosen = _chosen(plan)
    num_cpus, cpu_reason = _cpus(plan, chosen, families, slots)
    resources, device_reason = _accelerators(chosen, families)
    memory, memory_reason = _memory(chosen, slots)
    return ReplicaRequest(num_cpus=num_cpus, resources=resources, memory_bytes=memory,
                          reasons=[cpu_reason, device_reason, memory_reason])


def replica_capacity(plan: Plan, slots: int = 1) -> Optional[float]:
    """Audio seconds one replica produces per wall second: ``slots / RTF`` of the chosen proposal.

    None when nothing was chosen or the chosen proposal has no RTF estimate
    (say so wherever it is shown). Slots sharing one device are assumed not to
    slow each other, so for ``slots > 1`` on one GPU this is an upper bound.
    """
    _check_slots(slots)
    rtf = plan.chosen.estimate.rtf if plan.chosen is not None else None
    if rtf is None or rtf <= 0:
        return None
    return slots / rtf


def cpu_share(node_cpus: int, replicas_on_node: int) -> int:
    """Cores each of ``replicas_on_node`` replicas may use on a node of ``node_cpus``: an even split, at least 1."""
    if replicas_on_node < 1:
        raise ValueError(f"replicas on a node must be at least 1, got {replicas_on_node}")
    return max(1, node_cpus // replicas_on_node)


# -- the parts of a request ---------------------------------------------------


def _check_slots(slots: int) -> None:
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")


def _chosen(plan: Plan) -> Proposal:
    if plan.chosen is None:
        raise NoFeasiblePlan(f"no replica request: the plan chose nothing ({plan.summary})")
    return plan.chosen


def _family_resource(chosen: Proposal, families: Mapping[str, DeviceFamilyInfo]) -> Optional[str]:
    info = families.get(chosen.device_family)
    return info.cluster_resource if info is not None else None


def _cpus(plan: Plan, chosen: Proposal, families: Mapping[str, DeviceFamilyInfo], slots: int) -> tuple[float, str]:
    per_slot = "" if slots == 1 else f" in each of {slots} slots"
    if not chosen.threads:
        return float(slots), (f"{slots} CPU{_s(slots)}: the plan names no thread count for {chosen.device}; "
                              f"1 CPU assumed{per_slot} to drive it")
    cpus = chosen.threads * slots
    why = f"{cpus} CPU{_s(cpus)}: the plan runs {chosen.threads} intra-op thread{_s(chosen.threads)}{per_slot}"
    siblings = _hyper_threads(plan)
    if siblings > 1 and _family_resource(chosen, families) is None:
        # The scheduler counts logical CPUs; threads sized one per physical core need their siblings held
        # too, or another replica's threads would share those cores.
        cpus *= siblings
        why = (f"{cpus} CPUs: the plan runs {chosen.threads} intra-op thread{_s(chosen.threads)}{per_slot}, one per "
               f"physical core, and the node has {siblings} logical CPUs per core (the scheduler counts logical "
               "CPUs; the siblings are held so no other replica shares those cores)")
    return float(cpus), why


def _hyper_threads(plan: Plan) -> int:
    physical, logical = plan.hardware.cores_physical, plan.hardware.cores_logical
    if not physical or not logical or logical <= physical:
        return 1
    return logical // physical


def _accelerators(chosen: Proposal, families: Mapping[str, DeviceFamilyInfo]) -> tuple[dict[str, float], str]:
    family = chosen.device_family
    info = families.get(family)
    if info is None:
        return {}, (f"no accelerator resource: the plan chose {chosen.device}, and no installed plugin registers "
                    f"the {family} family, so nothing says it needs one")
    if info.cluster_resource is None:
        return {}, (f"no accelerator resource: the plan chose {chosen.device} ({family} family registers no "
                    "cluster resource: CPUs only)")
    resource = info.cluster_resource
    return {resource: 1.0}, (f"1 {resource}: the plan chose {chosen.device} ({family} family registers "
                             f"resource {resource})")


def _memory(chosen: Proposal, slots: int) -> tuple[Optional[int], str]:
    peak = chosen.estimate.peak_memory_bytes
    if peak is None:
        return None, "no memory request: the plan has no peak-memory estimate"
    if chosen.memory_pool != "system":
        return None, (f"no memory request: the plan's peak ~{_mib(peak)} is {chosen.device}'s own memory, which "
                      "the scheduler's memory resource (system RAM) does not count")
    total = peak * slots
    times = "" if slots == 1 else f" x {slots} slots"
    return total, f"memory {_mib(total)}: the plan's peak estimate in system RAM{times}"


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _s(n: float) -> str:
    return "" if n == 1 else "s"
