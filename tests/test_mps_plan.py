"""Plans for a Fish Speech S1-mini-shaped checkpoint on each Mac fixture, against a CPU competitor."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import voxfit_mps.plugin
from helpers import make_host, resolve, voxfit_cli
from test_fish_spec import S1_MINI, write_checkpoint
from voxfit import hookimpl
from voxfit.engines.fish.info import DECODE
from voxfit.models import Estimate, Proposal
from voxfit.planning.hardware import load_profile
from voxfit.planning.planner import make_plan
from voxfit.speaking.load import apply_env
from voxfit_mps import scoring

DATA = Path(__file__).resolve().parent / "data" / "hardware"
GiB = 2**30
CPU_RTF = 15.0  # field notes: M1 Air 8 GB, CPU only, RTF about 15



def own_env(plan):
    """The plugins' environment changes, without the core's own (e.g. TQDM_DISABLE for any fish engine)."""
    return [change for change in plan.env_changes if change.plugin != "fish"]

def cpu_competitor():
    """Stands in for the cpu_onnx plugin's fish proposal (the field notes' CPU figure)."""
    @hookimpl
    def score_config(model):
        if model.family != "fish":
            return None
        return [Proposal(device="cpu", device_family="cpu", engine="fish-torch", precision="fp32",
                         estimate=Estimate(rtf=CPU_RTF), score=round(1 / CPU_RTF, 4),
                         reasons=[f"CPU: RTF ~{CPU_RTF:g} (field notes, M1 Air)"])]
    return types.SimpleNamespace(VOXFIT_HOOK_API="2.0", score_config=score_config)


@pytest.fixture(scope="module")
def s1(tmp_path_factory):
    return resolve(str(write_checkpoint(tmp_path_factory.mktemp("m") / "openaudio-s1-mini")))


def plan_for(fixture: str, model, **settings):
    host = make_host(("cpu", cpu_competitor()), ("mps", voxfit_mps.plugin), **settings)
    return make_plan(host, hardware=load_profile(DATA / f"{fixture}.json"), model=model)


def by_variant(plan):
    everything = plan.ranked() + [r.proposal for r in plan.rejected]
    return {(p.plugin, p.engine, p.quantization, p.compile): p for p in everything}


def test_m1_air_8gb_chooses_mps_fp16_and_says_it_is_tight(s1):
    plan = plan_for("m1-air-8gb", s1)
    c = plan.chosen
    assert (c.plugin, c.device, c.engine, c.precision, c.quantization, c.compile) == \
        ("mps", "mps", "fish-torch", "fp16", "none", False)
    assert any("tight (an 8 GB Mac)" in r and "close other apps" in r for r in c.reasons)
    # ~2.29 GB per token at 60% of 68.25 GB/s = 56 ms, + 85 ms: ~7 tokens/s, RTF ~3
    assert 6 < c.estimate.tokens_per_s < 8 and 2.5 < c.estimate.rtf < 3.5
    assert c.estimate.rtf < CPU_RTF and plan.alternatives[0].engine == scoring.COREML_ENGINE
    assert plan.alternatives[-1].plugin == "cpu"
    assert c.memory_pool == "system"


def test_int8_and_compile_are_shown_vetoed_with_the_field_measurements(s1):
    plan = plan_for("m1-air-8gb", s1)
    rejected = {(r.proposal.quantization, r.proposal.compile): r for r in plan.rejected}
    int8 = rejected[("int8-weight-only", False)]
    assert any("never int8 on MPS" in v and "RTF 95.6" in v and "RTF ~15" in v for v in int8.reasons)
    compiled = rejected[("none", True)]
    assert any("never torch.compile on MPS" in v and "runaway process spawning" in v for v in compiled.reasons)


def test_8gb_mac_with_too_little_free_memory_falls_back_to_cpu(s1, tmp_path):
    data = json.loads((DATA / "m1-air-8gb.json").read_text())
    data["memory_available_bytes"] = 3 * GiB  # a browser with many tabs open
    path = tmp_path / "busy-air.json"
    path.write_text(json.dumps(data))
    host = make_host(("cpu", cpu_competitor()), ("mps", voxfit_mps.plugin))
    plan = make_plan(host, hardware=load_profile(path), model=s1)
    assert plan.chosen.plugin == "cpu"
    mps = next(r for r in plan.rejected if r.proposal.engine == "fish-torch" and r.proposal.plugin == "mps"
               and r.proposal.quantization == "none" and not r.proposal.compile)
    assert any("of system RAM available" in reason for reason in mps.reasons)


def test_a_model_larger_than_an_8gb_macs_budget_is_vetoed_by_the_os_reserve(tmp_path):
    big = resolve(str(write_checkpoint(tmp_path / "big", config=dict(S1_MINI, n_layer=60))))
    plan = plan_for("m1-air-8gb", big)
    assert plan.chosen.plugin == "cpu"
    mps = next(r for r in plan.rejected if r.proposal.plugin == "mps" and r.proposal.engine == "fish-torch"
               and r.proposal.quantization == "none" and not r.proposal.compile)
    assert any(v.startswith("does not fit") and "3.0 GiB of 8.0 GiB for macOS" in v for v in mps.reasons)


@pytest.mark.parametrize("fixture,bandwidth,reserve_gib", [
    ("m1-pro-16gb", 200.0, 4.0), ("m2-max-32gb", 400.0, 8.0), ("m3-max-64gb", 400.0, 16.0),
])
def test_larger_macs_fit_comfortably_and_run_faster(s1, fixture, bandwidth, reserve_gib):
    air = plan_for("m1-air-8gb", s1).chosen
    plan = plan_for(fixture, s1)
    c = plan.chosen
    assert (c.plugin, c.engine, c.precision) == ("mps", "fish-torch", "fp16")
    assert any(r.startswith("memory: fits") and f"keeping {reserve_gib:.1f} GiB" in r for r in c.reasons)
    assert not any("tight" in r for r in c.reasons)
    assert c.estimate.tokens_per_s > air.estimate.tokens_per_s and c.score > air.score
    assert any(f"of {bandwidth:g} GB/s" in r for r in c.reasons)


def test_speed_grows_with_bandwidth_but_is_capped_by_the_per_token_overhead(s1):
    rates = [plan_for(f, s1).chosen.estimate.tokens_per_s for f in ("m1-air-8gb", "m1-pro-16gb", "m2-max-32gb")]
    assert rates == sorted(rates)
    assert rates[-1] < 1 / DECODE["mps"].overhead_s


def test_intel_mac_plans_cpu_with_the_reason_in_the_profile(s1):
    plan = plan_for("intel-mac", s1)
    assert plan.chosen.plugin == "cpu"
    assert not any(p.plugin == "mps" for p in plan.ranked() + [r.proposal for r in plan.rejected])
    assert any("Intel Mac" in n for n in plan.hardware.notes)


def test_mps_unavailable_vetoes_every_mps_proposal(s1, tmp_path):
    data = json.loads((DATA / "m1-pro-16gb.json").read_text())
    data["devices"][0]["capabilities"].update(mps_available=False, mps_status="torch 2.1 was built without MPS support")
    path = tmp_path / "no-mps.json"
    path.write_text(json.dumps(data))
    host = make_host(("cpu", cpu_competitor()), ("mps", voxfit_mps.plugin))
    plan = make_plan(host, hardware=load_profile(path), model=s1)
    assert plan.chosen.plugin == "cpu"
    assert all(any("built without MPS" in v for v in r.reasons) for r in plan.rejected if r.proposal.plugin == "mps")


def test_piper_voices_get_no_mps_proposal():
    from helpers import piper_spec

    plan = plan_for("m3-max-64gb", piper_spec())
    assert plan.chosen is None and plan.rejected == []


def test_env_for_an_mps_run_spawns_falls_back_and_caps_memory(s1, monkeypatch):
    monkeypatch.delenv("PYTORCH_MPS_HIGH_WATERMARK_RATIO", raising=False)
    monkeypatch.delenv("PYTORCH_MPS_LOW_WATERMARK_RATIO", raising=False)
    plan = plan_for("m1-air-8gb", s1)
    env = {(c.kind, c.key): c for c in own_env(plan)}
    assert env[("mp_start_method", "")].value == "spawn" and "deadlock" in env[("mp_start_method", "")].reason
    assert env[("set_env", "PYTORCH_ENABLE_MPS_FALLBACK")].value == "1"
    high = float(env[("set_env", "PYTORCH_MPS_HIGH_WATERMARK_RATIO")].value)
    low = float(env[("set_env", "PYTORCH_MPS_LOW_WATERMARK_RATIO")].value)
    assert low <= high <= 1.0  # PyTorch refuses low > high
    assert all(c.plugin == "mps" and c.reason for c in own_env(plan))
    environ: dict[str, str] = {}
    apply_env([c for c in own_env(plan) if c.kind == "set_env"], environ)
    assert environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "1"


def test_user_watermarks_are_left_alone(s1, monkeypatch):
    monkeypatch.setenv("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "0.0")
    keys = {c.key for c in own_env(plan_for("m1-pro-16gb", s1))}
    assert "PYTORCH_MPS_HIGH_WATERMARK_RATIO" not in keys and "PYTORCH_ENABLE_MPS_FALLBACK" in keys


def test_cpu_choice_gets_no_mps_env(s1):
    assert own_env(plan_for("intel-mac", s1)) == []


def test_coreml_codec_proposal_is_offered_with_its_requirements(s1):
    plan = plan_for("m2-max-32gb", s1)
    coreml = next(p for p in plan.alternatives if p.engine == scoring.COREML_ENGINE)
    assert coreml.options.codec_backend == "coreml" and "coremltools" in coreml.requires
    assert coreml.score < plan.chosen.score
    assert any("cached by the hash of codec.pth" in r for r in coreml.reasons)


@pytest.mark.parametrize("fixture,chosen", [
    ("m1-air-8gb", "mps: fish-torch, mps, fp16"), ("m1-pro-16gb", "mps: fish-torch, mps, fp16"),
    ("m2-max-32gb", "mps: fish-torch, mps, fp16"), ("m3-max-64gb", "mps: fish-torch, mps, fp16"),
])
def test_cli_plans_each_mac_fixture(s1, fixture, chosen):
    result = voxfit_cli("plan", "--hardware", str(DATA / f"{fixture}.json"), "--model", str(s1.path))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"Chosen:   {chosen}" in out
    assert "never int8 on MPS" in out and "multiprocessing start method spawn" in out
