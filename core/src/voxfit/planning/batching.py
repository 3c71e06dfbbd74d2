"""How many sequences an autoregressive engine decodes together: a planned quantity, with its reason.

Decoding one token reads every weight once whether it is for one sequence or
several, so a batch of sequences costs little more per step than one
sequence: that is where a device's throughput is. What a batch costs is
memory: each sequence holds its own KV cache for the model's whole length,
allocated when the engine first speaks. A plugin that proposes a batched
engine calls :func:`plan_batch` with what one sequence's cache holds, what the
proposal needs for its first sequence, and the memory it may use (free
memory less the planner's headroom): the batch is as large as fits, never
more than the user's cap (``VOXFIT_MAX_BATCH``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from voxfit.models import Proposal
from voxfit.planning.hardware import describe_memory


@dataclass(frozen=True)
class BatchPlan:
    size: int
    peak_bytes: int  # what the proposal needs with ``size`` sequences
    reason: str


def plan_batch(*, need_bytes: int, per_sequence_bytes: int, usable_bytes: int, cap: int, where: str) -> BatchPlan:
    """The batch size for one proposal.

    :param need_bytes: the proposal's memory with one sequence (its KV cache included).
    :param per_sequence_bytes: what each further sequence adds (its KV cache at the model's length).
    :param usable_bytes: the memory the proposal may use, headroom already taken off.
    :param cap: the largest batch allowed (the ``max_batch`` setting, or the engine's own limit).
    :param where: the memory in words ("cuda:0's free memory", "available system RAM").
    """
    cap = max(1, cap)
    if per_sequence_bytes <= 0:
        return BatchPlan(cap, need_bytes, f"batch {cap}: sequences hold no cache of their own (VOXFIT_MAX_BATCH)")
    fits = 1 + max(0, (usable_bytes - need_bytes) // per_sequence_bytes)
    size = max(1, min(cap, fits))
    peak = need_bytes + (size - 1) * per_sequence_bytes
    head = (f"batch {size}: up to {size} requests decode together, one step for all (a step reads every weight "
            f"once, so it costs little more than one request's); each holds a KV cache of "
            f"{describe_memory(per_sequence_bytes)} at the model's length")
    if fits > cap:
        return BatchPlan(size, peak, f"{head}; {describe_memory(usable_bytes)} usable of {where} would hold "
                                     f"{fits}, the cap is {cap} (VOXFIT_MAX_BATCH)")
    return BatchPlan(size, peak, f"{head}; {describe_memory(usable_bytes)} usable of {where} holds {size} "
                                 f"beside the model ({describe_memory(peak)} in all)")


def apply_tuned_batch(proposal: Proposal, tuned: Optional[dict[str, Any]]) -> None:
    """Lower a proposal's batch to what ``voxfit tune --batch`` measured best here (never raise it: memory
    decided the plan's size), with the measurement as its reason."""
    if not tuned or not isinstance(tuned.get("size"), int) or tuned["size"] >= proposal.batch_size:
        return
    proposal.batch_size = max(1, tuned["size"])
    proposal.reasons.append(f"batch {proposal.batch_size}: {tuned.get('reason', 'measured by voxfit tune')} "
                            f"({tuned.get('measured_at', '')})")
