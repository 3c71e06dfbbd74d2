"""The GPU environment: narrowing to the chosen GPU, allocator settings, and a device lock that sticks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_pynvml import HARDWARE_DIR
from helpers import make_settings
from test_fish_spec import write_checkpoint
from voxfit.models import Proposal
from voxfit.planning.hardware import load_profile
from voxfit_cuda.env import env_changes
from voxfit_cuda.proposal_options import CudaOptions

TESTS = Path(__file__).resolve().parent


def cuda_proposal(device="cuda:1", uuid="GPU-2a1b3c4d-1111-4000-8000-4090bbbb0001", index=1):
    return Proposal(plugin="cuda", device=device, device_family="cuda", engine="fish-torch",
                    options=CudaOptions(uuid=uuid, nvml_index=index))


def cpu_proposal():
    return Proposal(plugin="cpu_onnx", device="cpu", device_family="cpu", engine="fish-torch")


def as_dict(changes):
    return {c.key: c.value for c in changes}


def test_chosen_gpu_is_the_only_visible_one_named_by_uuid():
    hw = load_profile(HARDWARE_DIR / "two-gpu-one-busy.json")
    changes = env_changes(cuda_proposal(), hw, make_settings(), environ={})
    env = as_dict(changes)
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                   "CUDA_VISIBLE_DEVICES": "GPU-2a1b3c4d-1111-4000-8000-4090bbbb0001",
                   "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert all(c.reason for c in changes)
    assert "inside the process it is cuda:0" in next(c.reason for c in changes if c.key == "CUDA_VISIBLE_DEVICES")


def test_users_allocator_settings_are_kept():
    hw = load_profile(HARDWARE_DIR / "two-gpu-one-busy.json")
    env = as_dict(env_changes(cuda_proposal(), hw, make_settings(),
                              environ={"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}))
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128,expandable_segments:True"
    env = as_dict(env_changes(cuda_proposal(), hw, make_settings(),
                              environ={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}))
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:False"


def test_cpu_lock_hides_every_gpu_whatever_was_chosen():
    hw = load_profile(HARDWARE_DIR / "h100.json")
    for proposal in (cpu_proposal(), cuda_proposal("cuda:0")):
        changes = env_changes(proposal, hw, make_settings(device="cpu"), environ={})
        assert [(c.kind, c.key, c.value) for c in changes] == [("set_env", "CUDA_VISIBLE_DEVICES", "")]
        assert "device locked to cpu" in changes[0].reason


def test_cpu_choice_hides_gpus_only_where_there_are_nvidia_gpus():
    with_gpu = load_profile(HARDWARE_DIR / "h100.json")
    assert as_dict(env_changes(cpu_proposal(), with_gpu, make_settings(), environ={})) == {"CUDA_VISIBLE_DEVICES": ""}
    without = with_gpu.model_copy(update={"devices": [with_gpu.devices[0]], "flags": {}})
    assert env_changes(cpu_proposal(), without, make_settings(), environ={}) == []


def test_another_plugins_cuda_proposal_is_left_to_its_owner():
    hw = load_profile(HARDWARE_DIR / "h100.json")
    theirs = cuda_proposal("cuda:0").model_copy(update={"plugin": "someone_else"})
    assert env_changes(theirs, hw, make_settings(), environ={}) == []


DRIVER = r"""
import json, os, sys, types
sys.path.insert(0, {tests!r})
import fake_pynvml
sys.modules["pynvml"] = fake_pynvml.build("rtx4090")  # NVML shows a GPU on this CPU-only machine

state = {{"torch_import_env": "never imported"}}

class TorchImportSpy:
    # Records os.environ at the first real import of torch. importlib.util.find_spec("torch")
    # (the ranker asking whether it is installed) is not an import and is ignored.
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and state["torch_import_env"] == "never imported":
            frame = sys._getframe(1)
            while frame and not (frame.f_code.co_name == "find_spec" and "importlib" in frame.f_code.co_filename
                                 and "util" in frame.f_code.co_filename):
                frame = frame.f_back
            if frame is None:
                state["torch_import_env"] = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        return None

sys.meta_path.insert(0, TorchImportSpy())

from voxfit import hookimpl
from voxfit.models import Estimate, Proposal
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.speaking.load import apply_env
from voxfit.settings import load_settings

cpu = types.ModuleType("testcpu")
cpu.VOXFIT_HOOK_API = "2.0"

@hookimpl
def score_config(model):
    return [Proposal(device="cpu", device_family="cpu", engine="test-cpu", estimate=Estimate(rtf=7.0),
                     score=1 / 7, reasons=["stand-in CPU proposal"])]

cpu.score_config = score_config
settings = load_settings(model=sys.argv[1])  # VOXFIT_DEVICE comes from the environment, as a user sets it
host = PluginHost.from_entry_points(settings, extra=[("testcpu", cpu)])
plan = make_plan(host)  # real detect (fake NVML underneath), real scoring, ranking and prepare_env
torch_before = "torch" in sys.modules
apply_env(plan.env_changes)  # what voxfit.speaking.load.load does before load_engine

import torch

parsed = torch.cuda._parse_visible_devices() if hasattr(torch.cuda, "_parse_visible_devices") else None
print("RESULT=" + json.dumps({{
    "gpu_in_profile": [d.id for d in plan.hardware.devices if d.family == "cuda"],
    "chosen": plan.chosen.device if plan.chosen else None,
    "env": [[c.key, c.value, c.plugin] for c in plan.env_changes],
    "torch_before_env": torch_before,
    "torch_import_env": state["torch_import_env"],
    "device_count": torch.cuda.device_count(),
    "is_available": torch.cuda.is_available(),
    "torch_visible": None if parsed is None else list(parsed)[:4],
}}))
"""


def run_driver(tmp_path, extra_env):
    model = write_checkpoint(tmp_path / "openaudio-s1-mini")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXFIT_", "CUDA_", "PYTORCH_CUDA"))}
    env.update(extra_env, VOXFIT_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", DRIVER.format(tests=str(TESTS)), str(model)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT=")]
    assert line, result.stderr[-3000:]
    return json.loads(line[0][len("RESULT="):])


def test_device_lock_to_cpu_hides_the_gpus_before_torch_is_imported(tmp_path):
    """VOXFIT_DEVICE=cpu sticks: CUDA_VISIBLE_DEVICES is "" at the moment torch is first imported.

    What this proves, in a real subprocess through voxfit's own planning and
    environment path: NVML (faked) shows an RTX 4090; the plan is locked to
    the CPU; the cuda plugin's prepare_env hides every GPU; the core applies
    it; and only then is torch imported, with CUDA_VISIBLE_DEVICES already
    "" (captured by an import hook at torch's first import), which CUDA
    documents as "no device visible" and torch's own parser of the variable
    reads as an empty list. A contrast run without the cuda plugin shows the
    variable is unset at that moment, i.e. the lock alone would not hide the
    GPU (the field notes failure).

    What it cannot prove: this machine's torch is a CPU-only build, so
    ``torch.cuda.device_count() == 0`` holds here whatever the variable says;
    only a machine with an NVIDIA GPU and a CUDA torch can show the count
    dropping from 1 to 0. benchmarks/cuda_real_gpu.py runs that check.
    """
    pytest.importorskip("torch", reason="torch is not installed: pip install torch==2.13.0 to run this proof")
    locked = run_driver(tmp_path, {"VOXFIT_DEVICE": "cpu"})
    assert locked["gpu_in_profile"] == ["cuda:0"]
    assert locked["chosen"] == "cpu"
    assert ["CUDA_VISIBLE_DEVICES", "", "cuda"] in locked["env"]
    assert locked["torch_before_env"] is False  # planning imported no torch
    assert locked["torch_import_env"] == ""
    assert locked["device_count"] == 0 and locked["is_available"] is False
    if locked["torch_visible"] is not None:
        assert locked["torch_visible"] == []  # torch's own reading of the variable: no device

    unprotected = run_driver(tmp_path, {"VOXFIT_DEVICE": "cpu", "VOXFIT_BLOCK_PLUGINS": "cuda"})
    assert unprotected["chosen"] == "cpu" and unprotected["torch_import_env"] == "<unset>"
    if unprotected["torch_visible"] is not None:
        assert unprotected["torch_visible"] != []  # without the plugin, torch would look for GPUs
