"""Threads for the load the CPU is under when the plan is made.

On a quiet machine one intra-op thread per physical core is fastest. With
other processes busy, threads that wait for a core slow every step of
ONNX Runtime's kernels (one other busy process on a 2-core machine: one
thread ran at RTF 0.124, two at 0.159), and a spinning worker burns time the
other process needs. So: one thread per core the others leave free, and no
spinning as soon as they take a noticeable share.
"""

from __future__ import annotations

from typing import Optional

from voxfit.sdk import CpuLoad


def fit_to_load(nominal: int, load: Optional[CpuLoad]) -> tuple[int, bool, str]:
    """(threads, spinning allowed, the reason in words) for ``nominal`` threads on a quiet machine."""
    if load is None:
        return nominal, True, f"{nominal} threads: no CPU load information (a saved profile, or cores reserved for this process)"
    seen = load.describe()
    # Only the coarse load counts (whole cores taken, contended or not): the plan cache keys on exactly that.
    threads = max(1, min(nominal, nominal - load.cores_taken))
    contended = load.contended
    if threads < nominal:
        why = (f"CPU busy at plan time ({seen}): {threads} intra-op thread{'s' if threads != 1 else ''} "
               f"instead of {nominal}, worker spinning off; a thread waiting for a core another process holds "
               "slows every kernel")
    elif contended:
        why = (f"CPU partly busy at plan time ({seen}): {threads} threads kept, worker spinning off so idle "
               "threads leave the CPU to the other processes")
    else:
        why = f"CPU quiet at plan time ({seen}): all {nominal} threads"
    return threads, not contended, why
