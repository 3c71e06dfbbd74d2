"""What ``voxfit tune`` promotes: round-robin measurements judged against a control by the spread they show.

Pure logic, no framework and no clock of its own: the caller hands in a
*measurer*, a callable that loads one proposal fresh and times it (session
start plus speaking each workload), so tests inject timings and the command
injects real ones.

How a run goes and why:

* A warm-up visit per candidate comes first and is discarded: it fills the
  caches a first load makes (int8 weights, the optimised graph) and the
  page cache, none of which a later ``voxfit run`` pays again.
* Then ``rounds`` rounds, each visiting every candidate once, the order
  rotated every round: a burst of load on the machine hits several
  candidates a little instead of one candidate a lot.
* What counts is end-to-end time, session start included, for each
  workload (a short sentence, a paragraph): what a fresh ``voxfit run``
  feels. A proposal with fast synthesis but a 3 s session start loses the
  short run, and that is counted.
* Every candidate is compared with the *control* (the proposal chosen before
  tuning) round by round, so slow drift of the machine cancels out.
* The *spread* is measured in the same run: how much the control's own
  times and each candidate's round-by-round ratios varied. A candidate is
  promoted only if it is faster overall by more than that spread (and at
  least by ``MIN_MARGIN``), and not slower than the spread allows on any
  workload. Otherwise the control stays: a noisy win is no win.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence

#: Smallest end-to-end gain that promotes a proposal, however quiet the run was:
#: below it a change of choice is not worth what it costs in stability.
MIN_MARGIN = 0.05


@dataclass(frozen=True)
class Sample:
    """One fresh visit to a candidate: its session start and, per workload, synthesis wall seconds."""

    load_seconds: float
    seconds: dict[str, float]
    audio_seconds: dict[str, float] = field(default_factory=dict)

    def end_to_end(self, workload: str) -> float:
        return self.load_seconds + self.seconds[workload]


Measurer = Callable[[str], Sample]


@dataclass
class Verdict:
    """How one candidate compared with the control."""

    key: str
    ratios: dict[str, float]  # median end-to-end time / the control's, per workload (< 1: faster)
    overall: float  # geometric mean of the ratios
    margin: float  # the gain it needed to be promoted (the spread measured in this run, at least MIN_MARGIN)
    promotable: bool
    reason: str


@dataclass
class Decision:
    control: str
    winner: str
    reason: str
    samples: dict[str, list[Sample]]
    verdicts: dict[str, Verdict]
    failed: dict[str, str]
    rounds: int

    def median_end_to_end(self, key: str, workload: str) -> float:
        return statistics.median(s.end_to_end(workload) for s in self.samples[key])

    def median_load(self, key: str) -> float:
        return statistics.median(s.load_seconds for s in self.samples[key])

    def median_rtf(self, key: str, workload: str) -> float:
        rtfs = [s.seconds[workload] / s.audio_seconds[workload] for s in self.samples[key]
                if s.audio_seconds.get(workload)]
        return statistics.median(rtfs) if rtfs else math.inf


def rotated(keys: Sequence[str], round_index: int) -> list[str]:
    """The visiting order of one round: shifted by one place each round."""
    if not keys:
        return []
    shift = round_index % len(keys)
    return list(keys[shift:]) + list(keys[:shift])


def measure_round_robin(
    keys: Sequence[str], measure: Measurer, rounds: int
) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """Warm-up visit (discarded), then ``rounds`` rotated rounds; a candidate that fails once is dropped."""
    samples: dict[str, list[Sample]] = {k: [] for k in keys}
    failed: dict[str, str] = {}
    for round_index in range(-1, rounds):  # -1: the warm-up
        for key in rotated([k for k in keys if k not in failed], max(round_index, 0)):
            try:
                sample = measure(key)
            except Exception as exc:  # a proposal that does not load is reported, not fatal
                failed[key] = str(exc) or type(exc).__name__
                samples.pop(key, None)
                continue
            if round_index >= 0:
                samples[key].append(sample)
    return samples, failed


def _relative_range(values: Sequence[float]) -> float:
    """(max - min) / median: the spread of repeated measurements of the same thing; 0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else math.inf


def judge(candidate: str, control: str, samples: dict[str, list[Sample]], workloads: Sequence[str]) -> Verdict:
    """Compare one candidate with the control, round by round, against the spread measured in this run."""
    mine, theirs = samples[candidate], samples[control]
    rounds = min(len(mine), len(theirs))
    ratios: dict[str, float] = {}
    spreads: dict[str, float] = {}
    for w in workloads:
        paired = [mine[i].end_to_end(w) / theirs[i].end_to_end(w) for i in range(rounds)]
        ratios[w] = statistics.median(paired)
        spreads[w] = max(_relative_range([s.end_to_end(w) for s in theirs]), _relative_range(paired))
    overall = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
    margin = max(MIN_MARGIN, *spreads.values())
    shown = ", ".join(f"{r:.2f}x for {w}" for w, r in ratios.items())
    if rounds < 2:
        return Verdict(candidate, ratios, overall, margin, False,
                       f"end to end {shown} the control's; one round measures no spread, so nothing is promoted")
    slower = [w for w in workloads if ratios[w] > 1.0 + spreads[w]]
    if slower:
        reason = (f"end to end (session start + synthesis) {shown} the control's: slower for {', '.join(slower)} "
                  f"by more than the {max(spreads[w] for w in slower):.0%} spread measured in this run")
        return Verdict(candidate, ratios, overall, margin, False, reason)
    if overall > 1.0 - margin:
        reason = (f"end to end {shown} the control's (overall {overall:.2f}x): not faster by more than the "
                  f"{margin:.0%} measured spread, so the control stays")
        return Verdict(candidate, ratios, overall, margin, False, reason)
    reason = f"end to end {shown} the control's (overall {overall:.2f}x): faster by more than the {margin:.0%} spread"
    return Verdict(candidate, ratios, overall, margin, True, reason)


def decide(
    samples: dict[str, list[Sample]], control: str, workloads: Sequence[str], failed: dict[str, str], rounds: int,
    note: str = "",
) -> Decision:
    """The control, unless a candidate beats it by more than the measured spread; then the best such one."""
    verdicts = {k: judge(k, control, samples, workloads) for k in samples if k != control}
    promotable = [v for v in verdicts.values() if v.promotable]
    if promotable:
        best = min(promotable, key=lambda v: v.overall)
        return Decision(control, best.key, f"{note}promoted over the control: {best.reason}", samples, verdicts,
                        failed, rounds)
    closest = min(verdicts.values(), key=lambda v: v.overall, default=None)
    why = f"{note}kept as the control: no other proposal beat it end to end by more than the spread measured in this run"
    if closest is not None:
        why += f" (closest: {closest.overall:.2f}x overall, needed < {1.0 - closest.margin:.2f}x)"
    return Decision(control, control, why, samples, verdicts, failed, rounds)


def tune(
    keys: Sequence[str], control: str, measure: Measurer, rounds: int, workloads: Sequence[str]
) -> Decision:
    """Measure ``keys`` (the control among them) round robin and decide; ``control`` falls to the next that loaded."""
    if control not in keys:
        raise ValueError("the control must be one of the measured proposals")
    samples, failed = measure_round_robin(keys, measure, rounds)
    note = ""
    if control in failed:
        survivors = [k for k in keys if k in samples]
        if not survivors:
            return Decision(control, "", "every proposal failed to load", samples, {}, failed, rounds)
        control, note = survivors[0], "the previous choice failed to load, the next in rank is the control; "
    return decide(samples, control, workloads, failed, rounds, note)
