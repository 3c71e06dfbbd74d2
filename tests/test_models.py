"""Public models round-trip through JSON unchanged; that is what makes saved profiles and plans work."""

import json

import pytest
from helpers import GiB, cpu_profile
from pydantic import ValidationError
from voxfit.models import (
    AcceleratorDevice,
    EnvChange,
    Estimate,
    HardwareProfile,
    MemoryEstimate,
    ModelSpec,
    Plan,
    Proposal,
    RejectedProposal,
)


def gpu_profile() -> HardwareProfile:
    return cpu_profile(
        devices=[
            AcceleratorDevice(id="cpu", family="cpu", name="Test CPU"),
            AcceleratorDevice(
                id="cuda:0", family="cuda", name="NVIDIA RTX 3060", memory_total_bytes=12 * GiB,
                memory_free_bytes=11 * GiB, utilization_percent=3.0,
                capabilities={"compute_capability": "8.6", "bf16": True, "bandwidth_gbps": 360.0},
                flags=["wsl2"],
            ),
        ],
        flags={"wsl": "wsl2"},
        isa_flags=["avx2", "fma"],
    )


def test_hardware_profile_json_round_trip():
    profile = gpu_profile()
    again = HardwareProfile.model_validate_json(profile.model_dump_json())
    assert again == profile
    assert again.device("cuda:0").capabilities["compute_capability"] == "8.6"


def test_plan_json_round_trip_keeps_every_part():
    chosen = Proposal(plugin="cuda", device="cuda:0", device_family="cuda", engine="fish-torch", precision="bf16",
                      estimate=Estimate(rtf=0.3, peak_memory_bytes=5 * GiB, tokens_per_s=40.0), score=3.3,
                      reasons=["fits with room"])
    vetoed = Proposal(plugin="cpu_onnx", device="cpu", device_family="cpu", engine="fish-torch", score=0.1)
    spec = ModelSpec(family="fish", name="s1", parameter_count=500_000_000,
                     memory={"bf16": MemoryEstimate(weights_bytes=GiB, kv_cache_bytes=GiB // 2)})
    plan = Plan(model=spec, hardware=gpu_profile(), chosen=chosen,
                rejected=[RejectedProposal(proposal=vetoed, reasons=["too slow"])],
                env_changes=[EnvChange(kind="set_env", key="CUDA_VISIBLE_DEVICES", value="0", reason="x",
                                       plugin="cuda")],
                summary="chose cuda")
    data = json.loads(plan.model_dump_json())
    assert Plan.model_validate(data) == plan
    assert spec.memory["bf16"].total_bytes == GiB + GiB // 2


def test_unknown_fields_are_rejected_so_typos_surface():
    with pytest.raises(ValidationError):
        Proposal(device="cpu", device_family="cpu", engine="x", precison="fp16")


def test_proposal_label_names_what_differs():
    p = Proposal(plugin="cuda", device="cuda:0", device_family="cuda", engine="fish-torch", precision="fp16",
                 quantization="int8-weight-only", compile=True)
    assert p.label() == "cuda: fish-torch, cuda:0, fp16, int8-weight-only, compiled"
