"""Process changes an MPS run needs before torch is imported; each one says why."""

from __future__ import annotations

from typing import Mapping

from voxfit.sdk import EnvChange, Proposal

# PyTorch's MPS allocator defaults: high watermark 1.7 x Metal's recommended
# working set (so it may allocate well past it, into swap), low watermark 1.4
# on unified memory; it refuses a low watermark above the high one.
HIGH_WATERMARK = "1.0"
WATERMARK_VARIABLES = ("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "PYTORCH_MPS_LOW_WATERMARK_RATIO")
LOW_WATERMARK = "0.8"


def env_changes(proposal: Proposal, environ: Mapping[str, str]) -> list[EnvChange]:
    if proposal.device_family != "mps":
        return []
    changes = [
        EnvChange(kind="mp_start_method", value="spawn",
                  reason="macOS + MPS deadlocks with the default fork start method; spawn fixes it (docs/field-notes.md)"),
        EnvChange(kind="set_env", key="PYTORCH_ENABLE_MPS_FALLBACK", value="1",
                  reason="an op MPS does not implement runs on the CPU instead of raising NotImplementedError"),
    ]
    if not any(name in environ for name in WATERMARK_VARIABLES):
        changes += [
            EnvChange(kind="set_env", key="PYTORCH_MPS_HIGH_WATERMARK_RATIO", value=HIGH_WATERMARK,
                      reason="cap MPS allocations at Metal's recommended working set (default 1.7x lets them "
                             "spill into swap): an oversize load fails fast and voxfit falls back, instead of "
                             "crawling like the field notes' overflowing 4 GB GPU"),
            EnvChange(kind="set_env", key="PYTORCH_MPS_LOW_WATERMARK_RATIO", value=LOW_WATERMARK,
                      reason="PyTorch requires the low watermark at or below the high one (its default is 1.4); "
                             "above 0.8 the allocator frees cached blocks sooner"),
        ]
    return changes
