"""WSL detection from a fake filesystem root, and the wrapper adjusting CUDA proposals.

The WSL fixtures in tests/data/hardware/ are what detection gives on the fake
trees below (`python tests/test_wsl_plugin.py` rewrites them); a test holds
the committed files equal to a fresh detection.
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest
import voxfit_wsl.plugin
from helpers import make_host, resolve
from test_fish_spec import write_checkpoint
from voxfit import hookimpl
from voxfit.engines.fish.info import DECODE
from voxfit.models import AcceleratorDevice, Estimate, Proposal
from voxfit.planning.hardware import load_profile
from voxfit.planning.planner import make_plan
from voxfit_wsl import probe, wrapper

DATA = Path(__file__).resolve().parent / "data" / "hardware"
GiB = 2**30

WSL2_VERSION = ("Linux version 5.15.167.4-microsoft-standard-WSL2 (root@f9c826d3017f) (gcc (GCC) 11.2.0, "
                "GNU ld (GNU Binutils) 2.37) #1 SMP Tue Nov 5 00:21:55 UTC 2024")
WSL1_VERSION = ("Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com) (gcc version 5.4.0 (GCC) ) "
                "#3996-Microsoft Thu Jan 01 00:00:00 PST 2024")
WSL2_MOUNTS = ("none /usr/lib/wsl/drivers 9p ro,dirsync,aname=drivers 0 0\n"
               "/dev/sdc / ext4 rw,relatime 0 0\n"
               "C:\\134 /mnt/c 9p rw,dirsync,aname=drvfs;path=C:\\;uid=1000 0 0\n"
               "D:\\134 /mnt/d 9p rw,dirsync,aname=drvfs;path=D:\\;uid=1000 0 0\n")



def own_env(plan):
    """The plugins' environment changes, without the core's own (e.g. TQDM_DISABLE for any fish engine)."""
    return [change for change in plan.env_changes if change.plugin != "fish"]

def fake_root(root: Path, *, version: str, release: str, dxg: bool, libcuda: bool, mounts: str = "") -> Path:
    (root / "proc" / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "version").write_text(version + "\n")
    (root / "proc" / "sys" / "kernel" / "osrelease").write_text(release + "\n")
    (root / "proc" / "mounts").write_text(mounts)
    (root / "dev").mkdir(exist_ok=True)
    if dxg:
        (root / "dev" / "dxg").write_text("")
    if libcuda:
        (root / "usr" / "lib" / "wsl" / "lib").mkdir(parents=True, exist_ok=True)
        (root / "usr" / "lib" / "wsl" / "lib" / "libcuda.so").write_bytes(b"\x7fELF")
    return root


TREES = {
    "wsl2-rtx3060": dict(version=WSL2_VERSION, release="5.15.167.4-microsoft-standard-WSL2", dxg=True, libcuda=True,
                         mounts=WSL2_MOUNTS),
    "wsl1": dict(version=WSL1_VERSION, release="4.4.0-19041-Microsoft", dxg=False, libcuda=False,
                 mounts="C:\\134 /mnt/c drvfs rw,noatime 0 0\n"),
    "plain-linux": dict(version="Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) #45-Ubuntu SMP",
                        release="6.8.0-45-generic", dxg=False, libcuda=False),
}
# The RTX 3060 as voxfit-cuda's NVML detection reports it; NVML is that plugin's boundary, not this one's.
RTX3060 = AcceleratorDevice(
    id="cuda:0", family="cuda", name="NVIDIA GeForce RTX 3060", memory_total_bytes=12 * GiB,
    memory_free_bytes=11 * GiB, utilization_percent=3.0, detected_by="cuda",
    capabilities={"compute_capability": "8.6", "bf16": True, "bandwidth_gbps": 360.0, "memory_bus_width_bits": 192,
                  "memory_clock_mhz": 7501, "nvml_index": 0, "uuid": "GPU-3060"},
)


def fake_linux_host(monkeypatch):
    import platform

    import psutil
    import voxfit.planning.hardware

    Mem = namedtuple("svmem", "total available")
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(platform, "release", lambda: "5.15.167.4-microsoft-standard-WSL2")
    monkeypatch.setattr(platform, "python_version", lambda: "3.12.4")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem(16 * GiB, 13 * GiB))
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 12 if logical else 6)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)  # all 12 usable
    monkeypatch.setattr(voxfit.planning.hardware, "_cpuinfo",
                        lambda: ("AMD Ryzen 5 5600X 6-Core Processor", ["sse4_2", "avx", "avx2", "fma", "f16c"]))


def detect_profile(monkeypatch, tmp_path: Path, name: str):
    from voxfit.planning.planner import detect

    root = fake_root(tmp_path / name, **TREES[name])
    monkeypatch.setenv(probe.ROOT_ENV, str(root))
    monkeypatch.setenv("WSL_DISTRO_NAME", "Ubuntu-24.04")
    fake_linux_host(monkeypatch)
    profile = detect(make_host(("wsl", voxfit_wsl.plugin)))
    if name == "wsl2-rtx3060":
        profile.devices.append(RTX3060.model_copy(deep=True))
        profile.flags["triton"] = True  # what voxfit-cuda's detect records when Triton is importable
    return profile


# -- detection ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["wsl2-rtx3060", "wsl1"])
def test_committed_fixture_is_what_detection_gives(monkeypatch, tmp_path, name):
    fresh = detect_profile(monkeypatch, tmp_path, name).model_dump(mode="json")
    assert json.loads((DATA / f"{name}.json").read_text()) == fresh, \
        f"run `python tests/test_wsl_plugin.py` to regenerate {name}.json"


def test_wsl2_with_gpu_path(tmp_path):
    info = probe.probe(fake_root(tmp_path, **TREES["wsl2-rtx3060"]), {"WSL_DISTRO_NAME": "Ubuntu-24.04"})
    assert (info.kind, info.dxg, info.libcuda, info.distro) == ("wsl2", True, True, "Ubuntu-24.04")
    assert info.windows_mounts == ["/mnt/c", "/mnt/d"]  # WSL's own 9p share /usr/lib/wsl/drivers is not a drive
    assert any("Windows driver's libcuda.so" in n for n in info.notes)


def test_wsl1_is_told_apart_and_has_no_gpu(tmp_path):
    info = probe.probe(fake_root(tmp_path, **TREES["wsl1"]), {})
    assert info.kind == "wsl1"
    assert any("WSL1 has no GPU access" in n and "--set-version" in n for n in info.notes)


def test_old_wsl2_kernel_name_and_missing_driver(tmp_path):
    tree = dict(TREES["wsl2-rtx3060"], release="4.19.128-microsoft-standard", libcuda=False)
    info = probe.probe(fake_root(tmp_path, **tree), {})
    assert info.kind == "wsl2" and not info.libcuda
    assert any("install the NVIDIA driver on Windows" in n for n in info.notes)


def test_plain_linux_is_not_wsl(monkeypatch, tmp_path):
    profile = detect_profile(monkeypatch, tmp_path, "plain-linux")
    assert "wsl" not in profile.flags and profile.notes == []


def test_missing_proc_is_not_an_error(tmp_path):
    assert probe.probe(tmp_path / "empty", {}).kind is None


# -- the wrapper ---------------------------------------------------------------


def cuda_test_plugin(compile_reason: str, compiled: bool = False, blocked: str = ""):
    """A plugin named "cuda" proposing what voxfit-cuda proposes; the wrapper sees exactly this.

    ``blocked`` is the field voxfit-cuda sets when compile is off (``facts["compile_blocked"]``): the
    wrapper reads that field, never the reason text."""
    @hookimpl
    def score_config(model, hardware):
        gpu = hardware.device("cuda:0")
        if gpu is None or model.family != "fish":
            return None
        return [Proposal(device="cuda:0", device_family="cuda", engine="fish-torch", precision="bf16",
                         compile=compiled, memory_pool="device", score=0.4,
                         estimate=Estimate(rtf=2.5, tokens_per_s=8.6, peak_memory_bytes=int(4.5 * GiB)),
                         reasons=["NVIDIA GeForce RTX 3060 (cuda:0): RTF ~2.50", compile_reason],
                         facts={"compile_blocked": blocked} if blocked else {})]
    return types.SimpleNamespace(VOXFIT_HOOK_API="2.0", score_config=score_config)


def cpu_test_plugin():
    @hookimpl
    def score_config(model):
        return [Proposal(device="cpu", device_family="cpu", engine="fish-torch", estimate=Estimate(rtf=15.0),
                         score=round(1 / 15, 4), reasons=["CPU: RTF ~15 (field notes)"])]
    return types.SimpleNamespace(VOXFIT_HOOK_API="2.0", score_config=score_config)


WINDOWS_REASON = ("no torch.compile: windows has no working Triton (field notes: 'Cannot find a working triton "
                  "installation' on native Windows)")
COMPILED_REASON = "torch.compile with Triton: ~20% faster decoding (field notes: 20-30% on Linux)"


@pytest.fixture(scope="module")
def s1(tmp_path_factory):
    return resolve(str(write_checkpoint(tmp_path_factory.mktemp("m") / "openaudio-s1-mini")))


def plan(fixture, model, cuda, **kw):
    host = make_host(("cpu", cpu_test_plugin()), ("cuda", cuda), ("wsl", voxfit_wsl.plugin), **kw)
    return make_plan(host, hardware=load_profile(DATA / f"{fixture}.json"), model=model)


def test_wsl2_rtx3060_gets_a_compiled_variant_when_cuda_thought_it_was_windows(s1, monkeypatch):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    p = plan("wsl2-rtx3060", s1, cuda_test_plugin(WINDOWS_REASON, blocked="os"))
    c = p.chosen
    assert (c.plugin, c.device, c.compile) == ("cuda", "cuda:0", True)
    assert any("WSL2 (voxfit-wsl)" in r and "Triton works" in r for r in c.reasons)
    assert c.score == pytest.approx(0.4 * DECODE["cuda"].compile_speedup) and "triton" in c.requires
    eager = p.alternatives[0]
    assert (eager.plugin, eager.compile, eager.score) == ("cuda", False, 0.4)
    [change] = own_env(p)
    assert (change.kind, change.key, change.value, change.plugin) == \
        ("prepend_path", "LD_LIBRARY_PATH", "/usr/lib/wsl/lib", "wsl")


def test_already_compiled_cuda_proposal_gets_the_wsl2_reason_and_no_twin(s1):
    p = plan("wsl2-rtx3060", s1, cuda_test_plugin(COMPILED_REASON, compiled=True))
    cuda = [x for x in p.ranked() if x.plugin == "cuda"]
    assert len(cuda) == 1 and cuda[0].compile
    assert any("torch.compile works here" in r for r in cuda[0].reasons)


def test_triton_missing_is_not_overridden(s1):
    p = plan("wsl2-rtx3060", s1, cuda_test_plugin("no torch.compile: Triton is not installed (pip install triton)",
                                                  blocked="no-triton"))
    assert [x.compile for x in p.ranked() if x.plugin == "cuda"] == [False]


def test_the_wrapper_reads_the_decision_field_not_the_reason_text(s1):
    # A reason that mentions Windows decides nothing: only facts["compile_blocked"] == "os" does.
    p = plan("wsl2-rtx3060", s1, cuda_test_plugin(WINDOWS_REASON, blocked="no-triton"))
    assert [x.compile for x in p.ranked() if x.plugin == "cuda"] == [False]


def test_library_path_already_set_needs_no_change(s1, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/x:/usr/lib/wsl/lib")
    assert own_env(plan("wsl2-rtx3060", s1, cuda_test_plugin(WINDOWS_REASON, blocked="os"))) == []


def test_wsl1_vetoes_cuda_and_plans_cpu(s1):
    data = json.loads((DATA / "wsl1.json").read_text())
    assert data["flags"]["wsl"] == "wsl1" and data["devices"] == []
    p = plan("wsl1", s1, cuda_test_plugin(WINDOWS_REASON, blocked="os"))
    assert p.chosen.plugin == "cpu"
    assert any("WSL1 has no GPU" in n for n in p.hardware.notes)


def test_wsl1_vetoes_a_cuda_proposal_whatever_the_profile_says(s1, tmp_path):
    data = json.loads((DATA / "wsl2-rtx3060.json").read_text())
    data["flags"]["wsl"] = "wsl1"
    (tmp_path / "odd.json").write_text(json.dumps(data))
    host = make_host(("cpu", cpu_test_plugin()), ("cuda", cuda_test_plugin(WINDOWS_REASON, blocked="os")),
                     ("wsl", voxfit_wsl.plugin))
    p = make_plan(host, hardware=load_profile(tmp_path / "odd.json"), model=s1)
    assert p.chosen.plugin == "cpu"
    [cuda] = [r for r in p.rejected if r.proposal.plugin == "cuda"]
    assert any("WSL1 has no GPU access (voxfit-wsl)" in v for v in cuda.reasons)


def test_model_under_mnt_c_loads_over_the_bridge(s1):
    on_c = s1.model_copy(update={"path": Path("/mnt/c/Users/me/models/openaudio-s1-mini")})
    p = plan("wsl2-rtx3060", on_c, cuda_test_plugin(COMPILED_REASON, compiled=True))
    c = p.chosen
    size = wrapper.model_bytes(on_c)
    assert size == (1600 + 1400) * 2**20 + sum(f.stat().st_size for k, f in s1.files.items()
                                                  if k not in ("codec", "model"))
    expected = size / wrapper.BRIDGE_BYTES_PER_S
    assert c.estimate.load_seconds == pytest.approx(expected, abs=0.1)
    assert any("Windows drive (/mnt/c)" in r and "9P bridge" in r and "~100 MB/s" in r for r in c.reasons)
    cpu = next(x for x in p.ranked() if x.plugin == "cpu")
    assert cpu.estimate.load_seconds is None  # only CUDA proposals are the wrapper's business


def test_model_in_the_linux_filesystem_is_untouched(s1):
    p = plan("wsl2-rtx3060", s1, cuda_test_plugin(COMPILED_REASON, compiled=True))
    assert p.chosen.estimate.load_seconds is None
    assert not any("9P bridge" in r for r in p.chosen.reasons)


def test_existing_load_estimate_grows_by_the_bridge_cost(s1):
    on_d = s1.model_copy(update={"path": Path("/mnt/d/tts/s1")})
    proposal = Proposal(device="cuda:0", device_family="cuda", engine="fish-torch", plugin="cuda",
                        estimate=Estimate(load_seconds=10.0))
    hardware = load_profile(DATA / "wsl2-rtx3060.json")
    [adjusted] = wrapper.adjust([proposal], on_d, hardware, make_host().registry)
    size = wrapper.model_bytes(on_d)
    grew = size / wrapper.BRIDGE_BYTES_PER_S - size / wrapper.LINUX_FS_BYTES_PER_S
    assert adjusted.estimate.load_seconds == pytest.approx(10.0 + grew, abs=0.1) and adjusted.plugin == "cuda"


def test_not_wsl_leaves_cuda_proposals_alone(s1, tmp_path):
    data = json.loads((DATA / "wsl2-rtx3060.json").read_text())
    data["flags"] = {"triton": True}
    (tmp_path / "linux.json").write_text(json.dumps(data))
    host = make_host(("cuda", cuda_test_plugin(WINDOWS_REASON, blocked="os")), ("wsl", voxfit_wsl.plugin))
    p = make_plan(host, hardware=load_profile(tmp_path / "linux.json"), model=s1)
    assert [x.compile for x in p.ranked()] == [False] and own_env(p) == []


def test_with_the_real_cuda_plugin_when_it_scores(s1, monkeypatch):
    import voxfit_cuda.plugin

    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    on_c = s1.model_copy(update={"path": Path("/mnt/c/models/s1")})
    p = plan("wsl2-rtx3060", on_c, voxfit_cuda.plugin)
    cuda = [x for x in p.ranked() + [r.proposal for r in p.rejected] if x.plugin == "cuda"]
    assert cuda and all(any("voxfit-wsl" in r for r in x.reasons) for x in cuda)


def regenerate() -> None:
    import tempfile

    mp = pytest.MonkeyPatch()
    try:
        for name in ("wsl2-rtx3060", "wsl1"):
            with mp.context() as m, tempfile.TemporaryDirectory() as tmp:
                profile = detect_profile(m, Path(tmp), name)
            (DATA / f"{name}.json").write_text(json.dumps(profile.model_dump(mode="json"), indent=2) + "\n")
            print(f"wrote {DATA / f'{name}.json'}")
    finally:
        mp.undo()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    regenerate()
