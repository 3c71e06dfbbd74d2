"""Plans count only the CPUs this process may use: its affinity mask, then VOXFIT_CPU_BUDGET."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_pynvml import HARDWARE_DIR
from helpers import voxfit_cli
from voxfit.cli import main
from voxfit.planning import cpu_affinity, hardware

AFFINITY = hasattr(os, "sched_getaffinity")


def fake_machine(monkeypatch, physical=8, logical=16, allowed=None):
    import psutil

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: logical_count if logical else physical)
    logical_count = logical
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(allowed if allowed is not None else range(logical)),
                        raising=False)


def write_topology(root, cores):
    """cpuN/topology for each logical CPU N, sharing core ids as `cores` says (siblings share one)."""
    for cpu, core in enumerate(cores):
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")


def test_hyper_thread_siblings_count_as_one_physical_core(tmp_path):
    write_topology(tmp_path, [0, 0, 1, 1])
    assert cpu_affinity.physical_cores_of({0, 1}, root=tmp_path) == 1
    assert cpu_affinity.physical_cores_of({0, 2}, root=tmp_path) == 2
    assert cpu_affinity.physical_cores_of({7}, root=tmp_path) is None  # unreadable: unknown, not guessed


def test_detection_counts_only_the_cpus_in_the_affinity_mask(monkeypatch):
    fake_machine(monkeypatch, physical=8, logical=16, allowed={0, 1, 2})
    monkeypatch.setattr(cpu_affinity, "physical_cores_of", lambda cpus: None)
    profile = hardware.detect_host()
    assert (profile.cores_physical, profile.cores_logical) == (3, 3)
    assert "may run on 3 of 16 logical CPUs" in profile.notes[0]


def test_a_full_mask_changes_nothing_and_says_nothing(monkeypatch):
    fake_machine(monkeypatch, physical=8, logical=16)
    profile = hardware.detect_host()
    assert (profile.cores_physical, profile.cores_logical, profile.notes) == (8, 16, [])


def test_the_budget_caps_below_the_mask(monkeypatch):
    fake_machine(monkeypatch, physical=8, logical=16, allowed=range(8))
    monkeypatch.setattr(cpu_affinity, "physical_cores_of", lambda cpus: 4)
    profile = hardware.detect_host(cpu_budget=2)
    # 8 logical CPUs on 4 cores: 2 of them are one core's worth (two threads on one core slow each other).
    assert (profile.cores_physical, profile.cores_logical) == (1, 2)
    assert profile.notes[-1].startswith("CPU budget 2 (setting cpu_budget, VOXFIT_CPU_BUDGET): plans count 1 physical")
    assert hardware.detect_host(cpu_budget=64).cores_logical == 8  # a budget above the mask caps nothing


def test_monkeypatched_affinity_reaches_the_plan_through_the_cli(monkeypatch):
    fake_machine(monkeypatch, physical=8, logical=16, allowed={0})
    monkeypatch.setattr(cpu_affinity, "physical_cores_of", lambda cpus: 1)
    result = CliRunner().invoke(main, ["plan", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["hardware"]["cores_logical"] == 1
    assert plan["chosen"]["threads"] == 1


def test_budget_one_plans_one_thread_through_the_cli():
    detected = voxfit_cli("detect", "--json", env={"VOXFIT_CPU_BUDGET": "1"})
    assert detected.returncode == 0, detected.stderr
    profile = json.loads(detected.stdout)
    assert (profile["cores_physical"], profile["cores_logical"]) == (1, 1)
    cpu = next(d for d in profile["devices"] if d["id"] == "cpu")
    assert cpu["capabilities"]["cores_physical"] == 1  # the CPU plugin saw the capped count
    planned = voxfit_cli("plan", "--json", env={"VOXFIT_CPU_BUDGET": "1"})
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["chosen"]["threads"] == 1


def test_budget_caps_a_saved_profile_too():
    profile = str(HARDWARE_DIR / "h100.json")
    whole = json.loads(voxfit_cli("plan", "--hardware", profile, "--json").stdout)
    share = json.loads(voxfit_cli("plan", "--hardware", profile, "--json", env={"VOXFIT_CPU_BUDGET": "8"}).stdout)
    # 8 of the H100 node's 112 logical CPUs (2 per core) are 4 cores: one Piper thread per physical core.
    assert (whole["chosen"]["threads"], share["chosen"]["threads"]) == (56, 4)
    assert "of the 56 / 112 the profile describes" in share["hardware"]["notes"][-1]


@pytest.mark.skipif(not AFFINITY or not shutil.which("taskset") or (os.cpu_count() or 1) < 2,
                    reason="needs taskset and two CPUs")
def test_taskset_narrows_the_plan_and_the_plan_cache_notices():
    first = json.loads(voxfit_cli("plan", "--json").stdout)  # stored in the plan cache: nothing here prevents it
    exe = Path(sys.executable).with_name("voxfit")
    pinned = subprocess.run(["taskset", "-c", "0", str(exe), "plan", "--json"], capture_output=True, text=True)
    assert pinned.returncode == 0, pinned.stderr
    plan = json.loads(pinned.stdout)
    assert plan["hardware"]["cores_logical"] == 1 and plan["chosen"]["threads"] == 1
    assert first["hardware"]["cores_logical"] == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("value", "error"), [("0", "greater than or equal to 1"), ("two", "valid integer")])
def test_a_bad_budget_is_one_line(value, error):
    result = voxfit_cli("plan", env={"VOXFIT_CPU_BUDGET": value})
    assert result.returncode != 0
    assert result.stderr.decode().strip().count("\n") == 0
    assert "from VOXFIT_CPU_BUDGET: Input should be" in result.stderr.decode() and error in result.stderr.decode()


def test_an_empty_budget_is_unset():
    result = voxfit_cli("detect", "--json", env={"VOXFIT_CPU_BUDGET": ""})
    assert result.returncode == 0 and not any("CPU budget" in n for n in json.loads(result.stdout)["notes"])


def test_reserved_cores_are_planned_without_the_machines_load():
    # A Ray replica's cores are reserved for it: the node's other load (other replicas, Ray) is not contention.
    plain = json.loads(voxfit_cli("detect", "--json", env={"VOXFIT_CPU_BUDGET": "2"}).stdout)
    assert any(k.startswith("cpu_load_") for k in plain["flags"])
    reserved = voxfit_cli("detect", "--json", env={"VOXFIT_CPU_BUDGET": "2", "VOXFIT_CPU_RESERVED": "1"})
    profile = json.loads(reserved.stdout)
    assert not any(k.startswith("cpu_load_") for k in profile["flags"])
    assert any("reserved" in note for note in profile["notes"])
    planned = voxfit_cli("plan", "--json", env={"VOXFIT_CPU_BUDGET": "2", "VOXFIT_CPU_RESERVED": "1"})
    chosen = json.loads(planned.stdout)["chosen"]
    assert chosen["threads"] == min(2, os.cpu_count() or 1)  # all of the budget, whatever else runs
