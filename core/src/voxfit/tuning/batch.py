"""``voxfit tune --batch``: the chosen proposal's batch measured here, from 1 up to what its plan allows.

The plan sizes a batch by memory: as many sequences as fit. Whether each of
them still buys throughput depends on the machine (where decoding stops being
memory-bound, a larger batch only makes each request slower). This measures
it: the engine is loaded once, then for each size ``n`` (1, 2, 4, ... up to
the planned batch) ``n`` requests speak the same sentence at once, ``rounds``
times, sizes in turn; what counts is the audio seconds delivered per wall
second (the median of the rounds). The batch kept is the smallest within
:data:`CLOSE_ENOUGH` of the best: a request in a smaller batch waits less for
its own audio. Plans read it back (:func:`voxfit.planning.batching.apply_tuned_batch`) and never go
above what memory allows.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from voxfit.models import Plan
from voxfit.planning import measurements
from voxfit.plugins import PluginHost

#: a smaller batch is kept when it delivers at least this share of the best throughput
CLOSE_ENOUGH = 0.95
SENTENCE = "A short measurement tells which batch is fastest on this machine."


@dataclass
class BatchTuning:
    sizes: dict[int, float] = field(default_factory=dict)  # batch -> audio seconds per wall second (median)
    chosen: int = 1
    reason: str = ""

    def entry(self, stamp: str) -> dict[str, Any]:
        return {"size": self.chosen, "throughput": {str(k): round(v, 3) for k, v in self.sizes.items()},
                "reason": self.reason, "measured_at": stamp}


def sizes_up_to(planned: int) -> list[int]:
    """1, 2, 4, ... and the planned batch itself."""
    sizes, n = [], 1
    while n < planned:
        sizes.append(n)
        n *= 2
    return sizes + [planned]


def decide(throughput: dict[int, float]) -> BatchTuning:
    """The smallest batch within CLOSE_ENOUGH of the best measured throughput, and why."""
    best = max(throughput, key=lambda n: throughput[n])
    chosen = min(n for n, rate in throughput.items() if rate >= CLOSE_ENOUGH * throughput[best])
    shown = ", ".join(f"batch {n}: {rate:.2f}" for n, rate in sorted(throughput.items()))
    reason = (f"measured by `voxfit tune --batch` (audio seconds per second, {shown}): batch {chosen} "
              + ("delivers the most" if chosen == best else
                 f"delivers {throughput[chosen] / throughput[best]:.0%} of batch {best}'s, with less waiting"))
    return BatchTuning(dict(throughput), chosen, reason)


def measure(synthesize: Callable[[str], float], sizes: list[int], rounds: int) -> dict[int, float]:
    """Median audio seconds per wall second for each size: ``n`` threads each speak SENTENCE once."""
    runs: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            runs[n].append(_at_once(synthesize, n))
    return {n: statistics.median(r) for n, r in runs.items()}


def _at_once(synthesize: Callable[[str], float], n: int) -> float:
    """Audio seconds per wall second when ``n`` requests speak SENTENCE at once."""
    audio = [0.0] * n

    def one(i: int) -> None:
        audio[i] = synthesize(SENTENCE)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(audio) / (time.perf_counter() - start)


def tune_batch(host: PluginHost, plan: Plan, rounds: int = 3) -> tuple[BatchTuning, Optional[str]]:
    """Measure the chosen proposal's batch sizes and cache the choice; (result, why it was not saved or None)."""
    from voxfit.engine import ConcurrentSynthesis
    from voxfit.speaking import load as runtime

    chosen = plan.chosen
    assert chosen is not None
    loaded = runtime.load_proposal(host, plan, chosen, [])
    try:
        engine = loaded.engine
        if not isinstance(engine, ConcurrentSynthesis) or chosen.batch_size <= 1:
            return BatchTuning({}, 1, f"{chosen.label()} decodes one request at a time: nothing to tune"), None

        def speak(text: str) -> float:
            return sum(chunk.seconds for chunk in engine.synthesize_with(text, None))

        speak(SENTENCE)  # warm-up: first runs fill caches a server has already filled
        result = decide(measure(speak, sizes_up_to(chosen.batch_size), rounds))
    finally:
        loaded.engine.close()
    try:
        measurements.save_batch(host.settings.cache_dir, plan.hardware, plan.model,
                                measurements.proposal_key(chosen), result.entry(time.strftime("%Y-%m-%d %H:%M")))
    except (OSError, ValueError) as exc:
        return result, f"measured, but not saved: {exc}"
    return result, None
