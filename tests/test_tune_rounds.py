"""`voxfit tune`'s decision logic with injected timings: a fake machine with a fake clock and bursts of load."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from voxfit.tuning.round_robin import MIN_MARGIN, Sample, rotated, tune

WORKLOADS = ("short", "paragraph")


@dataclass
class Proposal:
    load: float  # session start, seconds, on a quiet machine
    short: float  # synthesis of the short sentence
    paragraph: float


@dataclass
class FakeMachine:
    """Runs visits on a fake clock; a burst of load slows whatever runs during it."""

    proposals: dict[str, Proposal]
    bursts: list[tuple[float, float, float]] = field(default_factory=list)  # (start, end, slowdown factor)
    slow_visits: dict[int, float] = field(default_factory=dict)  # visit number -> slowdown factor
    jitter: float = 0.0
    seed: int = 0
    now: float = 0.0
    visits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _run(self, seconds: float) -> float:
        start = self.now
        factor = max([f for (a, b, f) in self.bursts if a <= start < b], default=1.0)
        factor *= self.slow_visits.get(len(self.visits) - 1, 1.0)
        taken = seconds * factor * (1.0 + self._rng.uniform(-self.jitter, self.jitter))
        self.now += taken
        return taken

    def measure(self, key: str) -> Sample:
        self.visits.append(key)
        p = self.proposals[key]
        load = self._run(p.load)
        return Sample(load, {"short": self._run(p.short), "paragraph": self._run(p.paragraph)},
                      {"short": 2.5, "paragraph": 18.7})


def true_end_to_end(p: Proposal) -> dict[str, float]:
    return {"short": p.load + p.short, "paragraph": p.load + p.paragraph}


def run(machine: FakeMachine, control: str = "default", rounds: int = 3):
    return tune(list(machine.proposals), control, machine.measure, rounds, WORKLOADS)


# The case that matters: the ORT defaults synthesise as fast or faster but start the session in 3.1 s.
BASE = {
    "default": Proposal(load=0.16, short=0.17, paragraph=0.75),
    "ort-defaults": Proposal(load=3.1, short=0.16, paragraph=0.70),
    "one-thread": Proposal(load=0.15, short=0.25, paragraph=1.10),
    "int8": Proposal(load=0.17, short=0.17, paragraph=0.76),
}


def test_rounds_are_round_robin_with_a_discarded_warm_up() -> None:
    machine = FakeMachine(dict(BASE))
    decision = run(machine, rounds=3)
    n = len(BASE)
    assert len(machine.visits) == n * 4  # a warm-up visit each, then three rounds
    for r in range(4):  # every round visits every proposal once before any is visited again
        assert sorted(machine.visits[r * n:(r + 1) * n]) == sorted(BASE)
    assert machine.visits[n:2 * n] != machine.visits[2 * n:3 * n]  # the order rotates
    assert all(len(s) == 3 for s in decision.samples.values())  # the warm-up is not counted
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"]


def test_a_slow_session_start_is_counted_and_never_promoted() -> None:
    decision = run(FakeMachine(dict(BASE), jitter=0.02))
    assert decision.winner == "default"
    verdict = decision.verdicts["ort-defaults"]
    assert not verdict.promotable
    assert verdict.ratios["short"] > 5  # 3.26 s vs 0.33 s end to end
    assert "slower for short" in verdict.reason
    # ... even with the control as the one that starts slowly: the fast starter is promoted over it.
    flipped = run(FakeMachine(dict(BASE), jitter=0.02), control="ort-defaults")
    assert flipped.winner != "ort-defaults"
    assert "promoted over the control" in flipped.reason


def test_a_clear_win_is_promoted_and_a_small_one_is_not() -> None:
    clear = dict(BASE, int8=Proposal(load=0.12, short=0.12, paragraph=0.55))  # ~30% faster end to end
    decision = run(FakeMachine(clear, jitter=0.02))
    assert decision.winner == "int8"
    assert decision.verdicts["int8"].overall < 1 - MIN_MARGIN
    small = dict(BASE, int8=Proposal(load=0.16, short=0.165, paragraph=0.72))  # ~3% faster: not worth a change
    kept = run(FakeMachine(small, jitter=0.01))
    assert kept.winner == "default"
    assert "kept as the control" in kept.reason


def test_a_burst_of_load_on_the_control_does_not_promote_a_slower_proposal() -> None:
    # The burst (another process taking the cores: everything 2x slower) lands on the control in one round.
    n = len(BASE)
    second_round = rotated(list(BASE), 1)
    machine = FakeMachine(dict(BASE), slow_visits={2 * n + second_round.index("default"): 2.0})
    decision = run(machine, rounds=3)
    hit = decision.samples["default"]
    assert max(s.end_to_end("paragraph") for s in hit) > 1.5 * min(s.end_to_end("paragraph") for s in hit)
    assert decision.winner == "default"
    assert not decision.verdicts["int8"].promotable


def test_one_round_measures_no_spread_and_promotes_nothing() -> None:
    clear = dict(BASE, int8=Proposal(load=0.12, short=0.12, paragraph=0.55))
    decision = run(FakeMachine(clear), rounds=1)
    assert decision.winner == "default"
    assert "no spread" in decision.verdicts["int8"].reason


@pytest.mark.parametrize("seed", range(300))
def test_random_bursts_and_jitter_never_promote_a_proposal_that_is_not_faster(seed: int) -> None:
    rng = random.Random(seed)
    # Candidates at most as fast as the control, within a few percent (the hard case), or clearly slower.
    proposals = {
        "default": Proposal(load=0.16, short=0.17, paragraph=0.75),
        "twin": Proposal(load=0.16 * rng.uniform(1.0, 1.03), short=0.17, paragraph=0.75 * rng.uniform(1.0, 1.03)),
        "slow-start": Proposal(load=rng.uniform(1.0, 3.5), short=0.15, paragraph=0.66),
        "slower": Proposal(load=0.15, short=0.17 * rng.uniform(1.0, 1.3), paragraph=0.75 * rng.uniform(1.0, 1.3)),
    }
    one_round = sum(sum(true_end_to_end(p).values()) for p in proposals.values())
    bursts = []
    for _ in range(rng.randint(1, 4)):  # other processes starting and stopping at random during the run
        start = rng.uniform(0, one_round * 6)
        bursts.append((start, start + rng.uniform(0.2, one_round * 1.5), rng.uniform(1.2, 2.5)))
    decision = run(FakeMachine(proposals, bursts=bursts, jitter=0.04, seed=seed), rounds=rng.choice((3, 5)))
    assert decision.winner == "default", decision.reason


def test_a_proposal_that_fails_to_load_is_reported_and_the_control_falls_to_the_next() -> None:
    machine = FakeMachine(dict(BASE))

    def measure(key: str) -> Sample:
        if key in ("default", "int8"):
            raise RuntimeError(f"{key} does not load here")
        return machine.measure(key)

    decision = tune(list(BASE), "default", measure, 3, WORKLOADS)
    assert set(decision.failed) == {"default", "int8"}
    assert "int8 does not load here" in decision.failed["int8"]
    assert decision.control == "ort-defaults"  # the next in rank
    assert decision.winner == "one-thread"  # 0.4 / 1.25 s end to end against 3.26 / 3.8 s
    assert "failed to load" in decision.reason


def test_what_tune_caches_for_the_plugins_to_read() -> None:
    from voxfit.models import Proposal as Real
    from voxfit.tuning.trials import cache_entries

    clear = dict(BASE, int8=Proposal(load=0.12, short=0.12, paragraph=0.55))
    machine = FakeMachine(clear, jitter=0.02)
    decision = tune(list(clear), "default", machine.measure, 3, WORKLOADS)
    proposals = {k: Real(plugin="cpu_onnx", device="cpu", device_family="cpu", engine="piper-onnx",
                         options={"variant": k}) for k in clear}
    entries, summary = cache_entries(decision, proposals, lambda p: {"onnxruntime": "1.0"}, "today")
    assert summary == {"winner": "int8", "control": "default", "reason": decision.reason, "rounds": 3,
                       "measured_at": "today"}
    assert entries["int8"]["verdict"].startswith("chosen by `voxfit tune`: promoted over the control")
    assert "beaten by a measured margin" in entries["default"]["verdict"]
    assert "slower for short" in entries["ort-defaults"]["verdict"]
    assert entries["ort-defaults"]["load_seconds"] == pytest.approx(3.1, rel=0.05)
    assert entries["int8"]["rtf"] == pytest.approx(0.55 / 18.7, rel=0.05)  # the paragraph's synthesis RTF
    assert entries["int8"]["ratio_to_control"]["paragraph"] < 0.8
    assert entries["default"]["ratio_to_control"] is None and entries["int8"]["versions"] == {"onnxruntime": "1.0"}
