"""MPS detection with macOS faked at its lowest boundary: platform, subprocess.run, psutil.

The Mac fixtures in tests/data/hardware/ are what this detection produces:
`python tests/test_mps_detect.py` rewrites them, and a test holds the
committed files equal to a fresh detection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest

GiB = 2**30
DATA = Path(__file__).resolve().parent / "data" / "hardware"
PAGE = 16384


def vm_stat(available_bytes: int, page: int = PAGE) -> str:
    """vm_stat's real layout; free + inactive + speculative add up to `available_bytes`."""
    pages = available_bytes // page
    free, inactive = pages // 4, pages // 2
    speculative = pages - free - inactive
    return (
        f"Mach Virtual Memory Statistics: (page size of {page} bytes)\n"
        f"Pages free:                               {free}.\n"
        f"Pages active:                             201234.\n"
        f"Pages inactive:                           {inactive}.\n"
        f"Pages speculative:                        {speculative}.\n"
        f"Pages throttled:                                 0.\n"
        f"Pages wired down:                         112233.\n"
        f"Pages purgeable:                            4321.\n"
    )


def ioreg(gpu_cores: int) -> str:
    return (
        '+-o AGXAcceleratorG13G  <class AGXAcceleratorG13G, id 0x100000256, registered, matched, active>\n'
        '    {\n'
        '      "IOClass" = "AGXAcceleratorG13G"\n'
        f'      "gpu-core-count" = {gpu_cores}\n'
        '      "model" = "Apple GPU"\n'
        '    }\n'
    )


# What each Mac answers. Apple Silicon figures are those of the retail models.
MACS = {
    "m1-air-8gb": dict(machine="arm64", macos="14.6.1", brand="Apple M1", memsize=8 * GiB, gpu=7, perf=4, eff=4,
                       available=int(5.1 * GiB), cores=(8, 8), torch=True),
    "m1-pro-16gb": dict(machine="arm64", macos="15.1", brand="Apple M1 Pro", memsize=16 * GiB, gpu=16, perf=8,
                        eff=2, available=int(10.5 * GiB), cores=(10, 10), torch=True),
    "m2-max-32gb": dict(machine="arm64", macos="15.2", brand="Apple M2 Max", memsize=32 * GiB, gpu=30, perf=8,
                        eff=4, available=24 * GiB, cores=(12, 12), torch=True),
    "m3-max-64gb": dict(machine="arm64", macos="15.3", brand="Apple M3 Max", memsize=64 * GiB, gpu=40, perf=12,
                        eff=4, available=50 * GiB, cores=(16, 16), torch=True),
    "intel-mac": dict(machine="x86_64", macos="13.6.9", brand="Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz",
                      memsize=16 * GiB, gpu=None, perf=None, eff=None, available=9 * GiB, cores=(6, 12), torch=False),
}


class FakeMac:
    """Answers subprocess.run the way that Mac's sysctl, ioreg, vm_stat and a child Python would."""

    def __init__(self, mac: dict, mps_answer: dict | None = None) -> None:
        self.mac = mac
        self.mps_answer = mps_answer or {"built": True, "available": True, "torch": "2.13.0"}
        self.calls: list[list[str]] = []

    def answer(self, args: list[str]) -> tuple[int, str]:
        m = self.mac
        sysctls = {"machdep.cpu.brand_string": m["brand"], "hw.memsize": str(m["memsize"])}
        if m["machine"] == "arm64":
            sysctls.update({"hw.optional.arm64": "1", "hw.perflevel0.physicalcpu": str(m["perf"]),
                            "hw.perflevel1.physicalcpu": str(m["eff"])})
        if args[:2] == ["sysctl", "-n"]:
            value = sysctls.get(args[2])
            return (0, value + "\n") if value is not None else (1, "")
        if args[0] == "ioreg":
            return (0, ioreg(m["gpu"])) if m["gpu"] else (0, "")
        if args[0] == "vm_stat":
            return 0, vm_stat(m["available"])
        if args[0] == sys.executable and args[1] == "-c":
            return 0, json.dumps(self.mps_answer) + "\n"
        raise FileNotFoundError(args[0])

    def run(self, args, **kwargs):
        self.calls.append(list(args))
        code, out = self.answer(list(args))
        return subprocess.CompletedProcess(args, code, stdout=out, stderr="")


def fake_mac(monkeypatch, name: str, **kw) -> FakeMac:
    """Make this process look like the named Mac at every boundary the core and the plugin read."""
    import platform

    import psutil
    import voxfit.planning.hardware
    from voxfit_mps import sysinfo

    mac = MACS[name]
    fake = FakeMac(mac, **kw)
    monkeypatch.setattr(subprocess, "run", fake.run)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: mac["machine"])
    monkeypatch.setattr(platform, "release", lambda: "24.1.0")
    monkeypatch.setattr(platform, "processor", lambda: "arm" if mac["machine"] == "arm64" else "i386")
    monkeypatch.setattr(platform, "python_version", lambda: "3.12.4")
    monkeypatch.setattr(platform, "mac_ver", lambda: (mac["macos"], ("", "", ""), mac["machine"]))
    Mem = namedtuple("svmem", "total available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem(mac["memsize"], mac["available"]))
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: mac["cores"][1] if logical else mac["cores"][0])
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS has no affinity masks
    monkeypatch.setattr(voxfit.planning.hardware, "_cpuinfo", lambda: ("", []))  # macOS has no /proc/cpuinfo
    monkeypatch.setattr(sysinfo, "_find_spec", lambda name: SimpleNamespace(name=name) if mac["torch"] else None)
    return fake


def detect_profile(monkeypatch, name: str, **kw):
    import voxfit_mps.plugin
    from helpers import make_host
    from voxfit.planning.planner import detect

    fake_mac(monkeypatch, name, **kw)
    return detect(make_host(("mps", voxfit_mps.plugin)))


@pytest.mark.parametrize("name", sorted(MACS))
def test_committed_fixture_is_what_detection_gives(monkeypatch, name):
    fresh = detect_profile(monkeypatch, name).model_dump(mode="json")
    committed = json.loads((DATA / f"{name}.json").read_text())
    assert committed == fresh, f"run `python tests/test_mps_detect.py` to regenerate {name}.json"


def test_m1_air_is_read_from_sysctl_ioreg_and_vm_stat(monkeypatch):
    profile = detect_profile(monkeypatch, "m1-air-8gb")
    [mps] = profile.devices
    assert (mps.id, mps.family, mps.name) == ("mps", "mps", "Apple M1 (7-core GPU)")
    assert mps.memory_total_bytes == 8 * GiB
    assert mps.memory_free_bytes == int(5.1 * GiB) // PAGE * PAGE  # whole pages from vm_stat
    caps = mps.capabilities
    assert caps["chip"] == "M1" and caps["gpu_cores"] == 7 and caps["bandwidth_gbps"] == 68.25
    assert (caps["performance_cores"], caps["efficiency_cores"]) == (4, 4)
    assert caps["mps_available"] is True and caps["macos"] == "14.6.1"
    assert profile.os == "darwin" and profile.arch == "arm64"


def test_m3_max_bandwidth_follows_its_gpu_core_count(monkeypatch):
    assert detect_profile(monkeypatch, "m3-max-64gb").device("mps").capabilities["bandwidth_gbps"] == 400.0
    monkeypatch.setitem(MACS["m3-max-64gb"], "gpu", 30)
    assert detect_profile(monkeypatch, "m3-max-64gb").device("mps").capabilities["bandwidth_gbps"] == 300.0


def test_unknown_gpu_core_count_takes_the_lower_bandwidth_and_says_so(monkeypatch):
    monkeypatch.setitem(MACS["m3-max-64gb"], "gpu", None)
    caps = detect_profile(monkeypatch, "m3-max-64gb").device("mps").capabilities
    assert caps["bandwidth_gbps"] == 300.0 and "unknown GPU core count" in caps["bandwidth_source"]


def test_intel_mac_has_no_mps_device_and_says_why(monkeypatch):
    profile = detect_profile(monkeypatch, "intel-mac")
    assert profile.devices == []
    assert any("Intel Mac" in note and "Apple Silicon" in note for note in profile.notes)


def test_torch_is_asked_in_a_child_process_never_imported_here(monkeypatch):
    sys.modules.pop("torch", None)
    fake = fake_mac(monkeypatch, "m1-pro-16gb", mps_answer={"built": True, "available": False, "torch": "2.13.0"})
    from voxfit_mps import sysinfo

    available, why = sysinfo.torch_mps()
    assert available is False and "macOS 12.3" in why
    assert [sys.executable, "-c", sysinfo.TORCH_PROBE] in fake.calls
    assert "torch" not in sys.modules


def test_without_torch_no_child_is_started(monkeypatch):
    fake = fake_mac(monkeypatch, "m1-pro-16gb")
    from voxfit_mps import sysinfo

    monkeypatch.setattr(sysinfo, "_find_spec", lambda name: None)
    available, why = sysinfo.torch_mps()
    assert available is None and "not installed" in why
    assert not any(call[0] == sys.executable for call in fake.calls)


def test_failing_tools_are_not_errors(monkeypatch):
    fake_mac(monkeypatch, "m1-air-8gb")

    def broken(args, **kw):
        raise FileNotFoundError(args[0])

    monkeypatch.setattr(subprocess, "run", broken)
    from voxfit_mps import sysinfo

    mac = sysinfo.probe()
    assert mac.memory_total_bytes is None and mac.gpu_cores is None and mac.bandwidth is None
    assert any("not in voxfit's chip table" in n for n in mac.notes)


def test_not_a_mac_detects_nothing():
    import voxfit_mps.plugin
    from helpers import make_host
    from voxfit.planning.planner import detect

    assert detect(make_host(("mps", voxfit_mps.plugin))).devices == []  # this Linux machine


def regenerate() -> None:
    """Write every Mac fixture from a faked detection."""
    mp = pytest.MonkeyPatch()
    try:
        for name in sorted(MACS):
            with mp.context() as m:
                profile = detect_profile(m, name)
            (DATA / f"{name}.json").write_text(json.dumps(profile.model_dump(mode="json"), indent=2) + "\n")
            print(f"wrote {DATA / f'{name}.json'}")
    finally:
        mp.undo()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    regenerate()
