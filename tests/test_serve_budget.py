"""Several voices' plans must fit together, per memory pool, before anything is loaded."""

from __future__ import annotations

import pytest
from helpers import GiB, cpu_profile
from voxfit.errors import UsageError
from voxfit.models import AcceleratorDevice, Estimate, ModelSpec, Plan, Proposal
from voxfit.server.voices import check_memory


def plan(name: str, peak: int | None, device: str = "cpu", pool: str = "system") -> tuple[str, Plan]:
    hw = cpu_profile(memory_available_bytes=10 * GiB, devices=[
        AcceleratorDevice(id="cpu", family="cpu", name="CPU"),
        AcceleratorDevice(id="cuda:0", family="cuda", name="GPU", memory_total_bytes=24 * GiB,
                          memory_free_bytes=20 * GiB),
    ])
    chosen = Proposal(device=device, device_family=device.split(":")[0], engine="e", memory_pool=pool,
                      estimate=Estimate(peak_memory_bytes=peak))
    return name, Plan(model=ModelSpec(family="fish", name=name), hardware=hw, chosen=chosen)


def test_plans_that_fit_together_pass_and_each_pool_is_counted_apart():
    assert check_memory([plan("a", 4 * GiB), plan("b", 4 * GiB), plan("g", 16 * GiB, "cuda:0", "device")],
                        workers=1, headroom=0.15) == []


def test_a_plan_that_does_not_fit_beside_the_others_is_refused_with_the_numbers():
    with pytest.raises(UsageError) as err:
        check_memory([plan("a", 9 * GiB, "cuda:0", "device"), plan("b", 9 * GiB, "cuda:0", "device")],
                     workers=1, headroom=0.15)
    message = str(err.value)
    assert message.startswith("voice b (~9.0 GiB peak) does not fit beside a (9.0 GiB) in cuda:0's memory: 17.0 GiB")
    assert "VOXFIT_MEMORY_HEADROOM" in message and "\n" not in message


def test_workers_multiply_the_estimate_and_an_unknown_estimate_is_said():
    with pytest.raises(UsageError, match=r"voice a \(3 x ~3.0 GiB peak\) does not fit in system RAM"):
        check_memory([plan("a", 3 * GiB)], workers=3, headroom=0.15)
    notes = check_memory([plan("a", None)], workers=2, headroom=0.15)
    assert notes == ["voice a: no peak-memory estimate for system RAM; not counted in the memory budget"]


class Concurrent:
    """A stand-in engine that could run ``max_concurrent`` requests at once."""

    def __init__(self, n: int) -> None:
        self.max_concurrent = n

    def synthesize_with(self, text, options, *, first=True):
        yield from ()


def served(name: str, peak: int, each: int, wanted: int, engines: int = 1):
    from types import SimpleNamespace

    from voxfit.server.voices import Voice

    _, p = plan(name, peak)
    p.chosen.estimate = Estimate(peak_memory_bytes=peak, per_request_bytes=each)
    return Voice(name=name, plan=p, sessions=[SimpleNamespace(engine=Concurrent(wanted)) for _ in range(engines)])


def test_requests_at_once_are_bounded_by_the_memory_each_holds():
    from voxfit.server.voices import fit_concurrency

    # 10 GiB free, 15% headroom: 8.5 GiB; a 2 GiB peak leaves 6.5 GiB, room for 3 more requests of 2 GiB.
    big = served("big", 2 * GiB, 2 * GiB, wanted=8)
    notes = fit_concurrency([big], headroom=0.15)
    assert big.slots_per_engine == 4 and big.peak_bytes() == 8 * GiB
    assert notes == ["voice big: 4 request(s) at once per engine, not 8: each holds ~2.0 GiB while it runs "
                     "and system RAM has room for no more"]
    small = served("small", GiB, 100 * 2**20, wanted=4, engines=2)
    assert fit_concurrency([small], headroom=0.15) == [] and small.slots_per_engine == 4
    assert small.peak_bytes() == 2 * (GiB + 3 * 100 * 2**20)  # two engines, each with four at once


def test_voices_share_what_is_left():
    from voxfit.server.voices import fit_concurrency

    first, second = served("a", 2 * GiB, GiB, wanted=8), served("b", 2 * GiB, GiB, wanted=8)
    fit_concurrency([first, second], headroom=0.15)  # 8.5 - 4 = 4.5 GiB: four more requests, then none
    assert (first.slots_per_engine, second.slots_per_engine) == (5, 1)
