"""The CPU-load probe on a fake /proc, and the cpu_onnx plugin fitting threads to what it saw."""

from __future__ import annotations

from pathlib import Path

import pytest
from voxfit.models import HardwareProfile
from voxfit.planning import cpu_load
from voxfit.planning import measurements as tuning
from voxfit.planning.cpu_load import CpuLoad
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.settings import load_settings
from voxfit_cpu_onnx.load_threads import fit_to_load
from voxfit_cpu_onnx.piper_spec import embedded_default


class FakeProc:
    """A /proc whose counters advance as the fake clock does: CPUs busy with others, and this process."""

    def __init__(self, root: Path, cpus: int = 2, others: float = 0.0, own: float = 1.0) -> None:
        self.root, self.cpus, self.others, self.own = root, cpus, others, own
        self.now = 100.0
        self.sleeps: list[float] = []
        (root / "proc" / "self").mkdir(parents=True)
        (root / "proc" / "pressure").mkdir()
        self.write()

    def write(self) -> None:
        ticks = self.now * 100  # USER_HZ
        busy = int(ticks * (self.others + self.own))
        idle = int(ticks * self.cpus) - busy
        cpu_lines = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(self.cpus))
        (self.root / "proc" / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n{cpu_lines}intr 0\n")
        own = int(ticks * self.own)
        (self.root / "proc" / "self" / "stat").write_text(
            f"4242 (python (voxfit)) R 1 1 1 0 -1 0 0 0 0 0 {own} 0 0 0 20 0 1 0 0\n")

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.write()


def test_the_probe_counts_what_other_processes_used_not_this_one(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path, cpus=2, others=1.0, own=1.0)
    (tmp_path / "proc" / "loadavg").write_text("1.02 0.80 0.50 3/250 4242\n")
    (tmp_path / "proc" / "pressure" / "cpu").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    load = cpu_load.probe(tmp_path, clock=proc.clock, sleep=proc.sleep)
    assert proc.sleeps == [pytest.approx(cpu_load.MIN_WINDOW_SECONDS)]  # no mark: a short window of its own
    assert load.busy_by_others == pytest.approx(1.0, abs=0.05)
    assert load.window_seconds == pytest.approx(cpu_load.MIN_WINDOW_SECONDS)
    assert (load.loadavg_1m, load.runnable_others, load.pressure_some_avg10) == (1.02, 2, 12.5)
    assert "other processes used 1.0 CPUs" in load.describe() and "CPU pressure 12%" in load.describe()
    assert CpuLoad.from_flags(load.as_flags()) == CpuLoad(1.0, cpu_load.MIN_WINDOW_SECONDS, 1.02, 2, 12.5)


def test_a_mark_at_start_up_makes_the_window_and_nobody_waits(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path, cpus=4, others=0.0, own=1.0)
    cpu_load.mark(tmp_path, clock=proc.clock)
    proc.advance(0.3)  # the interpreter starting, plugins loading
    load = cpu_load.probe(tmp_path, clock=proc.clock, sleep=proc.sleep)
    assert proc.sleeps == []
    assert load.window_seconds == pytest.approx(0.3)
    assert load.busy_by_others == pytest.approx(0.0, abs=0.05)  # only this process was busy


def test_an_old_mark_is_not_used_for_a_window_of_minutes(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path, cpus=2, others=0.0, own=1.0)
    cpu_load.mark(tmp_path, clock=proc.clock)
    proc.advance(600)  # a long-lived process: the machine was quiet then
    proc.others = 1.0  # and is busy now
    proc.write()
    load = cpu_load.probe(tmp_path, clock=proc.clock, sleep=proc.sleep)
    assert proc.sleeps and load.window_seconds == pytest.approx(cpu_load.MIN_WINDOW_SECONDS)
    assert load.busy_by_others == pytest.approx(1.0, abs=0.1)


def test_without_proc_there_is_no_window_and_no_guess(tmp_path: Path) -> None:
    load = cpu_load.probe(tmp_path / "nothing", sleep=lambda s: None)
    assert load == CpuLoad(None)
    assert load.others == 0.0 and load.describe() == "no load information"


@pytest.mark.parametrize(("others", "pressure", "threads", "spinning", "words"), [
    (0.0, 0.0, 2, True, "CPU quiet"),
    (0.3, 0.0, 2, False, "threads kept, worker spinning off"),
    (0.0, 40.0, 2, False, "threads kept, worker spinning off"),
    (1.0, 5.0, 1, False, "1 intra-op thread instead of 2"),
    (3.5, 90.0, 1, False, "1 intra-op thread instead of 2"),
])
def test_threads_follow_the_cores_others_leave_free(others, pressure, threads, spinning, words) -> None:
    got, spin, why = fit_to_load(2, CpuLoad(others, 0.2, None, None, pressure))
    assert (got, spin) == (threads, spinning)
    assert words in why and "other processes used" in why
    assert fit_to_load(8, CpuLoad(3.0, 0.2))[0] == 5


def _hardware(flags: dict) -> HardwareProfile:
    return HardwareProfile(
        os="linux", arch="x86_64", cpu_model="Test CPU 2", cores_physical=2, cores_logical=2,
        isa_flags=["avx2"], memory_total_bytes=16 * 2**30, memory_available_bytes=12 * 2**30, flags=flags,
    )


def test_a_busy_machine_gets_one_thread_without_spinning_and_keeps_its_measurements(tmp_path: Path) -> None:
    settings = load_settings(cache_dir=str(tmp_path / "cache"), allow_plugins=["cpu_onnx"])
    host = PluginHost.from_entry_points(settings)
    model = embedded_default()
    quiet = make_plan(host, model=model, hardware=_hardware(CpuLoad(0.05, 0.2, 0.1, 0, 0.0).as_flags()))
    assert quiet.chosen.threads == 2 and quiet.chosen.options.allow_spinning is None
    assert any("CPU quiet at plan time" in r for r in quiet.chosen.reasons)
    # `voxfit tune` measured the machine as built (2 threads); a busy plan still finds that measurement.
    versions = tuning.module_versions(["onnxruntime", "piper-tts"])
    tuning.save(settings.cache_dir, quiet.hardware, model,
                {tuning.proposal_key(quiet.chosen): {"rtf": 0.05, "load_seconds": 0.1, "versions": versions}})
    busy = make_plan(host, model=model, hardware=_hardware(CpuLoad(1.0, 0.2, 1.1, 1, 20.0).as_flags()))
    chosen = busy.chosen
    assert chosen.options.variant == "fp32-fast-start"
    assert chosen.threads == 1 and chosen.options.allow_spinning is False
    assert any("other processes used 1.0 CPUs" in r and "1 intra-op thread instead of 2" in r for r in chosen.reasons)
    assert any("measured here by `voxfit tune`" in r for r in chosen.reasons)
    assert "fp32-1-thread" not in [p.options.variant for p in busy.ranked()]  # no duplicate of the default
    # A saved profile without a snapshot plans for the machine as built.
    plain = make_plan(host, model=model, hardware=_hardware({}))
    assert plain.chosen.threads == 2
    # Tune chose the one-thread variant: under load it is kept (not its duplicate, the default cut to one thread).
    one = next(p for p in quiet.ranked() if p.options.variant == "fp32-1-thread")
    tuning.save(settings.cache_dir, quiet.hardware, model,
                {tuning.proposal_key(one): {"rtf": 0.04, "load_seconds": 0.1, "versions": versions,
                                            "verdict": "chosen by `voxfit tune`: promoted"}},
                {"winner": tuning.proposal_key(one), "control": tuning.proposal_key(quiet.chosen), "reason": "x"})
    tuned = make_plan(host, model=model, hardware=_hardware(CpuLoad(1.0, 0.2, 1.1, 1, 20.0).as_flags()))
    assert tuned.chosen.options.variant == "fp32-1-thread"
    assert any("chosen by `voxfit tune`" in r for r in tuned.chosen.reasons)
    assert [p.options.variant for p in tuned.ranked()].count("fp32-fast-start") == 0
