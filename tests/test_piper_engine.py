"""The piper-onnx engine adapter and the Piper model spec, with the real embedded voice."""

from __future__ import annotations

import array
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_settings, resolve
from voxfit.errors import EngineLoadError, ModelError, UsageError
from voxfit.options import validate_options
from voxfit.plugins import PluginHost
from voxfit_cpu_onnx.piper_options import PiperOptions
from voxfit_cpu_onnx.piper_spec import check_onnx_container, embedded_default


def _rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def test_registration_goes_through_the_hook_and_is_plain_data() -> None:
    info = PluginHost.from_entry_points(make_settings()).registry.engine("piper-onnx")
    assert info is not None and info.plugin == "cpu_onnx"  # registered by the plugin, not the core
    assert info.families == frozenset({"piper"})
    assert set(info.requires) == {"onnxruntime", "piper"}
    assert info.extra == "cpu-onnx"
    assert set(info.options.model_fields) == {"speaker", "length_scale", "noise_scale", "noise_w_scale",
                                              "sentence_silence"}


def test_import_and_plan_stay_light() -> None:
    code = (
        "import sys, voxfit\n"
        "from voxfit.settings import load_settings\n"
        "from voxfit.plugins import PluginHost\n"
        "from voxfit.planning.planner import make_plan\n"
        "host = PluginHost.from_entry_points(load_settings())\n"
        "plan = make_plan(host)\n"
        "assert plan.chosen is not None and plan.chosen.engine == 'piper-onnx', plan.summary\n"
        "heavy = [m for m in ('onnxruntime', 'piper', 'numpy', 'torch', 'onnx') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_embedded_voice_spec() -> None:
    spec = embedded_default()
    assert spec.source == "embedded" and spec.family == "piper"
    assert spec.sample_rate == 22050
    assert spec.files["model"].is_file() and spec.files["config"].is_file()
    assert check_onnx_container(spec.files["model"]) is None


def test_corrupt_and_incomplete_voices_are_refused(tmp_path: Path) -> None:
    spec = embedded_default()
    data = spec.files["model"].read_bytes()
    config = spec.files["config"]
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    shutil.copy(config, tmp_path / "half.onnx.json")
    with pytest.raises(ModelError, match="corrupt: truncated"):
        resolve(str(tmp_path / "half.onnx"))
    (tmp_path / "noise.onnx").write_bytes(bytes(range(256)) * 64)
    shutil.copy(config, tmp_path / "noise.onnx.json")
    with pytest.raises(ModelError, match="corrupt"):
        resolve(str(tmp_path / "noise.onnx"))
    shutil.copy(spec.files["model"], tmp_path / "lonely.onnx")
    with pytest.raises(ModelError, match="config missing"):
        resolve(str(tmp_path / "lonely.onnx"))
    (tmp_path / "badcfg.onnx").symlink_to(spec.files["model"])
    (tmp_path / "badcfg.onnx.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"badcfg.onnx.json is not valid JSON \(Expecting property name"):
        resolve(str(tmp_path / "badcfg.onnx"))


@pytest.fixture(scope="module")
def engine():
    from voxfit_cpu_onnx import piper_engine as piper_onnx

    spec = embedded_default()
    eng = piper_onnx.load(spec.files["model"], spec.files["config"], threads=2, options={"enable_mem_reuse": False})
    yield eng
    eng.close()


@pytest.mark.slow
def test_engine_speaks(engine) -> None:
    chunks = list(engine.synthesize("Hello there. This is a second sentence."))
    assert len(chunks) == 2  # Piper's phonemizer splits sentences too
    assert all(c.sample_rate == 22050 for c in chunks)
    assert all(_rms(c.pcm) > 500 for c in chunks)
    assert engine.inference_modules() == ()


@pytest.mark.slow
def test_voice_options(engine) -> None:
    text = "The length scale makes speech slower or faster."
    quiet = {"noise_scale": 0.0, "noise_w_scale": 0.0}  # deterministic durations
    engine.configure(PiperOptions(length_scale=1.0, **quiet))
    normal = sum(c.seconds for c in engine.synthesize(text))
    engine.configure(PiperOptions(length_scale=1.5, **quiet))
    slow = sum(c.seconds for c in engine.synthesize(text))
    assert slow > 1.3 * normal, (normal, slow)
    engine.configure(PiperOptions(sentence_silence=0.75, **quiet))
    two = sum(c.seconds for c in engine.synthesize("One sentence here. Another one there."))
    engine.configure(PiperOptions(**quiet))  # a complete set: the silence is back to none
    two_plain = sum(c.seconds for c in engine.synthesize("One sentence here. Another one there."))
    # Silence goes between sentences across calls too (the engine has spoken before): 2 x 0.75 s.
    assert 1.45 < two - two_plain < 1.55, (two, two_plain)
    with pytest.raises(UsageError, match="single speaker"):
        engine.configure(PiperOptions(speaker="1"))
    with pytest.raises(UsageError, match="option length_scale=0.0 for the piper-onnx engine"):
        validate_options("piper-onnx", PiperOptions, {"length_scale": 0.0})


def test_unknown_session_option_is_refused() -> None:
    pytest.importorskip("onnxruntime")
    from voxfit_cpu_onnx.piper_engine import cpu_options, session_options

    with pytest.raises(EngineLoadError, match="session option graph_optimisation_level: Extra inputs are not permitted"):
        cpu_options({"graph_optimisation_level": "all"})  # a typo is refused, not silently ignored
    with pytest.raises(EngineLoadError, match="session option execution_mode"):
        cpu_options({"execution_mode": "sideways"})
    so = session_options(3, cpu_options({"graph_optimization_level": "basic", "execution_mode": "parallel",
                                         "enable_mem_reuse": False}))
    assert so.intra_op_num_threads == 3 and so.enable_mem_reuse is False
    assert "BASIC" in str(so.graph_optimization_level) and "PARALLEL" in str(so.execution_mode)


@pytest.mark.slow
def test_any_piper_voice_by_path_and_multispeaker_config(tmp_path: Path) -> None:
    """--model takes a voice anywhere; a multi-speaker config exposes --speaker by name (checked, not run)."""
    spec = embedded_default()
    (tmp_path / "v.onnx").symlink_to(spec.files["model"])
    cfg = json.loads(spec.files["config"].read_text())
    cfg["num_speakers"] = 3
    cfg["speaker_id_map"] = {"ann": 0, "bob": 1, "cy": 2}
    (tmp_path / "v.onnx.json").write_text(json.dumps(cfg))
    resolved = resolve(str(tmp_path / "v.onnx"))
    assert resolved.properties["num_speakers"] == 3 and resolved.source == "path"
    from voxfit_cpu_onnx import piper_engine as piper_onnx

    eng = piper_onnx.load(resolved.files["model"], resolved.files["config"], threads=1)
    eng.configure(PiperOptions(speaker="bob"))
    assert eng.speaker_id == 1
    eng.configure(PiperOptions(speaker="2"))
    assert eng.speaker_id == 2
    eng.configure(PiperOptions())
    assert eng.speaker_id is None  # unset: the voice's default speaker
    with pytest.raises(UsageError, match="unknown speaker"):
        eng.configure(PiperOptions(speaker="zed"))
    eng.close()
