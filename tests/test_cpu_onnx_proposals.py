"""cpu_onnx proposals for Piper voices, the measurement cache, the int8 cache and `voxfit tune`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from voxfit.models import HardwareProfile, ModelSpec
from voxfit.planning import measurements as tuning
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.settings import load_settings
from voxfit.util.files import file_sha256
from voxfit_cpu_onnx.piper_spec import embedded_default

VOXFIT = str(Path(sys.executable).with_name("voxfit"))


def _hardware(physical: int = 4, logical: int = 8) -> HardwareProfile:
    return HardwareProfile(
        os="linux", arch="x86_64", cpu_model="Test CPU 9000", cores_physical=physical, cores_logical=logical,
        isa_flags=["avx2", "avx512f", "avx512_vnni"], memory_total_bytes=16 * 2**30,
        memory_available_bytes=12 * 2**30, source="detected",
    )


def _plan(tmp_path: Path, hardware: HardwareProfile, model: ModelSpec | None = None):
    settings = load_settings(cache_dir=str(tmp_path / "cache"), allow_plugins=["cpu_onnx"])
    host = PluginHost.from_entry_points(settings)
    return make_plan(host, model=model or embedded_default(), hardware=hardware), settings


def _by_variant(plan) -> dict:
    return {p.options.variant: p for p in plan.ranked()}


def test_proposals_differ_where_it_matters_and_explain_themselves(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, _hardware(physical=4, logical=8))
    variants = _by_variant(plan)
    assert set(variants) >= {"fp32-fast-start", "fp32-ort-defaults", "fp32-1-thread", "fp32-parallel",
                             "int8-quint8", "int8-qint8"}
    chosen = plan.chosen
    assert chosen.options.variant == "fp32-fast-start"
    assert chosen.threads == 4  # physical cores, not the 8 logical ones
    assert any("physical core" in r for r in chosen.reasons)
    assert chosen.options.enable_mem_reuse is False
    assert variants["fp32-parallel"].options.execution_mode == "parallel"
    assert variants["fp32-1-thread"].threads == 1
    assert variants["int8-quint8"].quantization == "int8-dynamic-quint8"
    assert "onnx" in variants["int8-quint8"].requires
    for p in plan.ranked():
        assert p.reasons and all(isinstance(r, str) and len(r) > 20 for r in p.reasons)
        assert p.estimate.rtf and p.estimate.peak_memory_bytes
    for name in ("int8-quint8", "int8-qint8", "fp32-parallel"):
        assert any("not measured on this machine" in r for r in variants[name].reasons)
        assert variants[name].score < chosen.score


def test_no_piper_proposal_for_other_model_families(tmp_path: Path) -> None:
    fish = ModelSpec(family="fish", name="s1-mini")
    plan, _ = _plan(tmp_path, _hardware(), model=fish)
    considered = plan.ranked() + [r.proposal for r in plan.rejected]
    assert considered, "the fish proposals of the same plugin are still made"
    assert all(p.engine != "piper-onnx" for p in considered)


def test_a_cached_measurement_promotes_a_variant_only_for_this_machine_and_runtime(tmp_path: Path) -> None:
    hardware = _hardware()
    plan, settings = _plan(tmp_path, hardware)
    variants = _by_variant(plan)
    versions = tuning.module_versions(["onnxruntime", "piper-tts"])
    entries = {
        tuning.proposal_key(variants["int8-quint8"]): {"rtf": 0.02, "load_seconds": 0.4, "versions": versions,
                                                       "measured_at": "today"},
        tuning.proposal_key(variants["fp32-fast-start"]): {"rtf": 0.04, "load_seconds": 0.5, "versions": versions,
                                                           "measured_at": "today"},
    }
    tuning.save(settings.cache_dir, hardware, plan.model, entries)
    tuned, _ = _plan(tmp_path, hardware)
    assert tuned.chosen.options.variant == "int8-quint8"
    assert tuned.chosen.estimate.rtf == pytest.approx(0.02)
    assert any("measured here" in r for r in tuned.chosen.reasons)
    # Another machine (different core count) does not inherit the measurement.
    other, _ = _plan(tmp_path, _hardware(physical=2, logical=2))
    assert other.chosen.options.variant == "fp32-fast-start"
    # A measurement taken with another runtime version no longer counts.
    stale = {k: {**v, "versions": {"onnxruntime": "0.0.1"}} for k, v in entries.items()}
    tuning.save(settings.cache_dir, hardware, plan.model, stale)
    again, _ = _plan(tmp_path, hardware)
    assert again.chosen.options.variant == "fp32-fast-start"


@pytest.mark.slow
def test_int8_variant_is_made_once_and_is_really_int8(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from voxfit_cpu_onnx import cache

    voice = embedded_default()
    first = cache.ensure_quantized(tmp_path, voice.path, "int8-dynamic-quint8")
    st = first.stat()
    again = cache.ensure_quantized(tmp_path, voice.path, "int8-dynamic-quint8")
    st2 = again.stat()
    assert again == first
    assert (st2.st_ino, st2.st_mtime_ns, st2.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)  # not remade
    assert file_sha256(tmp_path, voice.path)[:32] in first.name  # keyed by the model's hash
    assert st.st_size < 0.5 * voice.path.stat().st_size
    model = onnx.load(str(first))
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.UINT8]
    assert len(int8_weights) > 10
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger") for n in model.graph.node)
    assert [p.name for p in tmp_path.rglob("*.part")] == []  # no temporary left behind
    # ONNX Runtime loads it and it speaks.
    from voxfit_cpu_onnx import piper_engine as piper_onnx

    eng = piper_onnx.load(first, voice.files["config"], threads=2, options={"enable_mem_reuse": False})
    pcm = b"".join(c.pcm for c in eng.synthesize("Quantized weights still speak."))
    assert len(pcm) > 22050  # more than half a second of audio
    eng.close()


@pytest.mark.slow
def test_a_measured_win_within_the_noise_keeps_the_safe_default(tmp_path: Path) -> None:
    hardware = _hardware()
    plan, settings = _plan(tmp_path, hardware)
    variants = _by_variant(plan)
    versions = tuning.module_versions(["onnxruntime", "piper-tts"])

    def measure(quint8_rtf: float) -> None:
        tuning.save(settings.cache_dir, hardware, plan.model, {
            tuning.proposal_key(variants["int8-quint8"]): {"rtf": quint8_rtf, "versions": versions},
            tuning.proposal_key(variants["fp32-fast-start"]): {"rtf": 0.040, "versions": versions},
        })

    measure(0.038)  # 5% faster: noise
    close, _ = _plan(tmp_path, hardware)
    assert close.chosen.options.variant == "fp32-fast-start"
    quint8 = _by_variant(close)["int8-quint8"]
    assert quint8.score < close.chosen.score and any("within 10%" in r for r in quint8.reasons)
    measure(0.030)  # 25% faster: a real win
    clear, _ = _plan(tmp_path, hardware)
    assert clear.chosen.options.variant == "int8-quint8"


def test_tune_measures_every_proposal_and_the_ranker_follows(tmp_path: Path) -> None:
    env = dict(os.environ, VOXFIT_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([VOXFIT, "tune", "--rounds", "2", "--json"], capture_output=True, env=env,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    measured = report["measurements"]
    assert len(measured) >= 6 and not report["failed"]
    assert all(e["rtf"] > 0 and e["load_seconds"] > 0 for e in measured.values())
    assert all(set(e["end_to_end_seconds"]) == {"short sentence", "paragraph"} for e in measured.values())
    decision = report["decision"]
    control = measured[decision["control"]]
    assert "fp32-fast-start" in control["label"]  # the choice before tuning is the control
    assert report["chosen"] == measured[decision["winner"]]["label"]  # the ranker follows tune's decision
    if decision["winner"] != decision["control"]:  # promoted: faster end to end than the control in this run
        winner = measured[decision["winner"]]
        assert sum(winner["ratio_to_control"].values()) < 2
    cached = list((tmp_path / "cache" / "measurements").glob("*.json"))
    assert len(cached) == 1
    # `voxfit plan` now shows the measurement and the decision as reasons.
    plan = subprocess.run([VOXFIT, "plan", "--json"], capture_output=True, env=env, timeout=120)
    chosen = json.loads(plan.stdout)["chosen"]
    assert any("measured here by `voxfit tune`" in r for r in chosen["reasons"])
    assert any("chosen by `voxfit tune`" in r for r in chosen["reasons"])


def test_tunes_decision_outranks_a_faster_rtf_with_a_slow_session_start(tmp_path: Path) -> None:
    """The ORT defaults synthesise a little faster but start seconds slower: tune kept the default, and so does the plan."""
    hardware = _hardware()
    plan, settings = _plan(tmp_path, hardware)
    variants = _by_variant(plan)
    versions = tuning.module_versions(["onnxruntime", "piper-tts"])
    default, ort = tuning.proposal_key(variants["fp32-fast-start"]), tuning.proposal_key(variants["fp32-ort-defaults"])
    tuning.save(settings.cache_dir, hardware, plan.model, {
        default: {"rtf": 0.064, "load_seconds": 0.16, "versions": versions, "verdict": "chosen by `voxfit tune`: kept"},
        ort: {"rtf": 0.050, "load_seconds": 3.1, "versions": versions,
              "verdict": "end to end 9.8x for short sentence: slower by more than the 4% spread"},
    }, {"winner": default, "control": default, "reason": "kept"})
    tuned, _ = _plan(tmp_path, hardware)
    assert tuned.chosen.options.variant == "fp32-fast-start"
    ort_p = _by_variant(tuned)["fp32-ort-defaults"]
    assert ort_p.score < tuned.chosen.score
    assert any("ranked below `voxfit tune`'s choice: end to end 9.8x" in r for r in ort_p.reasons)
    # Without the decision the old rule (1 / RTF, a >10% win) would have promoted it.
    tuning.save(settings.cache_dir, hardware, plan.model, {}, {"winner": "gone", "control": "gone", "reason": ""})
    legacy, _ = _plan(tmp_path, hardware)
    assert legacy.chosen.options.variant == "fp32-ort-defaults"
