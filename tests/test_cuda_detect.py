"""NVIDIA detection through NVML: the plugin's real probe on a fake pynvml (the only thing faked)."""

import sys

import fake_pynvml
import pytest
from fake_pynvml import MACHINES, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND, GiB, gpu, install
from voxfit_cuda import plugin
from voxfit_cuda.nvml_probe import bandwidth_gbps

# Published peak memory bandwidth (GB/s) of each fixture card.
PUBLISHED_GBPS = {"rtx3050-laptop": 192, "rtx3060": 360, "rtx4090": 1008, "v100": 900, "a100-80gb": 2039,
                  "h100": 3350}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GBPS))
def test_bandwidth_from_bus_width_and_memory_clock_matches_published_figures(monkeypatch, name):
    install(monkeypatch, name)
    device = plugin.detect().devices[0]
    measured = device.capabilities["bandwidth_gbps"]
    assert abs(measured - PUBLISHED_GBPS[name]) / PUBLISHED_GBPS[name] < 0.10, (name, measured)


def test_every_field_the_issue_lists_is_reported(monkeypatch):
    install(monkeypatch, "two-gpu-one-busy")
    detection = plugin.detect()
    busy, idle = detection.devices
    assert [d.id for d in detection.devices] == ["cuda:0", "cuda:1"]
    assert busy.name == "NVIDIA GeForce RTX 4090" and busy.family == "cuda"
    assert busy.memory_total_bytes == 24564 * 2**20 and busy.memory_free_bytes == int(4.6 * GiB)
    caps = busy.capabilities
    assert caps["compute_capability"] == "8.9" and caps["bf16"] is True
    assert caps["driver_version"] == "550.54.15" and caps["cuda_driver_version"] == "12.4"
    assert caps["memory_bus_width_bits"] == 384 and caps["memory_clock_mhz"] == 10501
    assert caps["uuid"] == "GPU-2a1b3c4d-0000-4000-8000-4090bbbb0000" and caps["nvml_index"] == 0
    assert caps["processes"] == 1 and caps["process_memory_bytes"] == int(19.3 * GiB)
    assert "pid 4242" in caps["process_list"]
    assert busy.utilization_percent == 92.0 and "busy" in busy.flags
    assert idle.utilization_percent == 0.0 and "busy" not in idle.flags and idle.capabilities["processes"] == 0
    assert detection.flags["nvidia_driver"] == "550.54.15" and "triton" in detection.flags


def test_compute_capability_decides_bf16_support(monkeypatch):
    install(monkeypatch, "v100")
    assert plugin.detect().devices[0].capabilities["bf16"] is False
    install(monkeypatch, "a100-80gb")
    assert plugin.detect().devices[0].capabilities["bf16"] is True


@pytest.mark.parametrize("code", [NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED])
def test_no_driver_or_no_nvml_reports_nothing_and_raises_nothing(monkeypatch, code):
    install(monkeypatch, dict(MACHINES["rtx4090"], init_error=code))
    assert plugin.detect() is None


def test_driver_present_but_nvml_failing_is_a_note_not_an_error(monkeypatch):
    install(monkeypatch, "nvml-fails")
    detection = plugin.detect()
    assert detection.devices == []
    assert detection.flags["nvml"].startswith("failed: RM has detected an NVML/RM version mismatch")
    assert "driver seems present but NVML failed" in detection.notes[0] and "reboot" in detection.notes[0]


def test_missing_pynvml_is_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    detection = plugin.detect()
    assert detection.devices == [] and "not installed" in detection.notes[0]


@pytest.mark.parametrize("value, expected", [
    ("1", ["cuda:1"]),
    ("GPU-2a1b3c4d-0000", ["cuda:0"]),  # a UUID prefix, as CUDA accepts
    ("1,0", ["cuda:0", "cuda:1"]),
    ("", []),
    ("-1", []),
    ("0,bogus,1", ["cuda:0"]),  # CUDA ignores everything after the first invalid entry
    ("GPU-ffff,1", []),  # an unknown UUID is invalid too
])
def test_cuda_visible_devices_is_respected(monkeypatch, value, expected):
    install(monkeypatch, "two-gpu-one-busy")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    detection = plugin.detect()
    assert [d.id for d in detection.devices] == expected
    hidden = 2 - len(expected)
    if hidden:
        assert any(f"hides {hidden} of 2" in n for n in detection.notes)


def test_mig_instances_are_devices_of_their_own_with_their_share_of_bandwidth(monkeypatch):
    a100 = MACHINES["a100-80gb"]["gpus"][0]
    migs = [{"name": "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "uuid": "MIG-aaaa-1111", "total": 40 * GiB,
             "free": 39 * GiB, "cc": (8, 0)},
            {"name": "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "uuid": "MIG-bbbb-2222", "total": 10 * GiB,
             "free": 9 * GiB, "cc": (8, 0)}]
    install(monkeypatch, dict(MACHINES["a100-80gb"], gpus=[dict(a100, mig=migs)]))
    detection = plugin.detect()
    parent, big, small = detection.devices
    assert "mig" in parent.flags and any("MIG enabled" in n for n in detection.notes)
    assert (big.id, small.id) == ("cuda:0:mig0", "cuda:0:mig1")
    assert big.capabilities["uuid"] == "MIG-aaaa-1111" and big.memory_total_bytes == 40 * GiB
    assert big.utilization_percent is None  # NVML has none per instance
    full = parent.capabilities["bandwidth_gbps"]
    assert big.capabilities["bandwidth_gbps"] == pytest.approx(full * 40 / 80, rel=0.01)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-bbbb")
    assert [d.id for d in plugin.detect().devices] == ["cuda:0:mig1"]


def test_missing_bus_width_leaves_bandwidth_unknown_rather_than_invented(monkeypatch):
    card = gpu("Some GPU", "GPU-1234", 8192, 7.0, (7, 5), None, None)
    install(monkeypatch, dict(MACHINES["rtx4090"], gpus=[card]))
    caps = plugin.detect().devices[0].capabilities
    assert "bandwidth_gbps" not in caps and caps["compute_capability"] == "7.5"


def test_virtual_gpu_is_flagged(monkeypatch):
    v100 = dict(MACHINES["v100"]["gpus"][0], virtualization=fake_pynvml.NVML_GPU_VIRTUALIZATION_MODE_VGPU)
    install(monkeypatch, dict(MACHINES["v100"], gpus=[v100]))
    assert "vgpu" in plugin.detect().devices[0].flags


def test_one_unreadable_gpu_does_not_hide_the_others(monkeypatch):
    fake = install(monkeypatch, "two-gpu-one-busy")
    del fake.gpus[0]["cc"]  # the card answers nothing sensible (KeyError inside the fake, like "GPU is lost")
    devices = plugin.detect().devices
    assert devices[0].flags == ["unreadable"] and devices[1].name == "NVIDIA GeForce RTX 4090"


def test_nvml_is_shut_down_after_detection(monkeypatch):
    fake = install(monkeypatch, "h100")
    plugin.detect()
    assert fake.init_count == 0 and fake.calls["nvmlInit"] == 1


def test_bandwidth_formula():
    assert bandwidth_gbps(192, 7501) == pytest.approx(360.0, abs=0.1)
