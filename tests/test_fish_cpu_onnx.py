"""cpu_onnx's fish proposals, end to end through the planner and the runtime, and the ONNX codec path."""

import numpy as np
import pytest
from helpers import GiB, cpu_profile, resolve
from test_fish_spec import write_checkpoint
from voxfit.engines.fish.engine import FishEngine
from voxfit.engines.fish.info import FishOptions
from voxfit.planning import ranking
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.settings import Settings
from voxfit.speaking.load import load


def host(**settings):
    return PluginHost.from_entry_points(Settings(allow_plugins=["cpu_onnx"], **settings))


def plan_for(checkpoint, profile=None, **settings):
    h = host(**settings)
    return h, make_plan(h, model=resolve(str(checkpoint)), hardware=profile or cpu_profile(cores_physical=4))


def test_two_fp32_cpu_proposals_with_physical_cores_less_one_threads(fish_checkpoint):
    _, plan = plan_for(fish_checkpoint, cpu_profile(cores_physical=4, cores_logical=8))
    ranked = plan.ranked()
    assert {p.engine for p in ranked} == {"fish-torch", "fish-torch+onnx-codec"}
    assert all(p.device == "cpu" and p.precision == "fp32" and p.threads == 3 for p in ranked)
    _, two = plan_for(fish_checkpoint, cpu_profile(cores_physical=2, cores_logical=4))
    assert {p.threads for p in two.ranked()} == {1}
    assert plan.chosen.engine == "fish-torch+onnx-codec"  # the measured faster decode, verified before use
    assert any("TQDM_DISABLE" == c.key for c in plan.env_changes)


def test_an_intel_mac_profile_vetoes_the_torch_stack_with_the_reason(fish_checkpoint):
    from helpers import REPO
    from voxfit.planning.hardware import load_profile

    profile = load_profile(REPO / "tests" / "data" / "hardware" / "intel-mac.json")  # a saved profile, too
    _, plan = plan_for(fish_checkpoint, profile)
    assert plan.chosen is None
    assert {r.proposal.engine for r in plan.rejected} == {"fish-torch", "fish-torch+onnx-codec"}
    assert all("no macOS x86_64 wheels" in " ".join(r.reasons) for r in plan.rejected)


def test_s1_mini_estimate_is_in_the_field_range_and_memory_vetoes_a_small_machine(tmp_path):
    ckpt = write_checkpoint(tmp_path / "openaudio-s1-mini")
    _, plan = plan_for(ckpt, cpu_profile(cores_physical=4))
    torch_only = next(p for p in plan.ranked() if p.engine == "fish-torch")
    assert 3 < torch_only.estimate.rtf < 20  # field reports: CPU RTF 6-15 for S1-mini
    assert any("assumed" in r for r in torch_only.reasons) and any("measured" in r for r in torch_only.reasons)
    assert torch_only.estimate.peak_memory_bytes > 4 * GiB  # fp32 weights, 8192-token KV cache, codec
    _, small = plan_for(ckpt, cpu_profile(memory_available_bytes=3 * GiB))
    assert small.chosen is None
    assert all("needs about" in " ".join(r.reasons) for r in small.rejected)


def test_a_missing_fish_runtime_names_the_exact_install_command(fish_checkpoint, monkeypatch):
    real = ranking._module_missing
    monkeypatch.setattr(ranking, "_module_missing", lambda name: name == "fish_speech" or real(name))
    _, plan = plan_for(fish_checkpoint)
    assert plan.chosen is None
    reasons = " ".join(r for rej in plan.rejected for r in rej.reasons)
    assert "runtime missing: fish_speech not installed" in reasons
    assert "pip install --no-deps fish-speech==0.1.0" in reasons


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


def _load(checkpoint, cache, engine_name):
    h, plan = plan_for(checkpoint, cpu_profile(cores_physical=2), cache_dir=cache)
    plan.chosen = next(p for p in plan.ranked() if p.engine == engine_name)
    plan.alternatives = []
    loaded = load(h, plan)
    loaded.engine.configure(FishOptions(max_new_tokens=12, seed=0))  # voice options, as `voxfit run -O ...` sets
    return loaded


def test_plan_load_clean_verify_and_speak_with_the_torch_codec(fish_checkpoint, onnx_cache):
    loaded = _load(fish_checkpoint, onnx_cache, "fish-torch")
    engine = loaded.engine
    try:
        assert isinstance(engine, FishEngine) and engine.threads == 1
        assert any("gradient checkpointing off" in a for a in loaded.artifacts_disabled)  # the hook ran
        chunk = next(engine.synthesize("Through the planner."))
        # fish-speech drops the last position (it assumes <|im_end|>): at most max_new_tokens - 1 codes
        assert 0 < chunk.tokens <= 11 and chunk.samples == chunk.tokens * 2048 and engine.codec_backend == "torch"
    finally:
        engine.close()


def test_onnx_codec_is_exported_once_verified_and_matches_torch(fish_checkpoint, onnx_cache):
    loaded = _load(fish_checkpoint, onnx_cache, "fish-torch+onnx-codec")
    engine = loaded.engine
    try:
        chunk = next(engine.synthesize("Through ONNX Runtime."))
        assert engine.backend == "fish-torch+onnx-codec" and engine.codec_backend == "onnx"
        assert any("exported to" in n and "matches torch" in n for n in engine.notes), engine.notes
        codes = engine.generate_codes("Compare the two decoders.")
        onnx_wave = engine.onnx_codec.decode(codes)
        engine.onnx_codec, torch_wave = None, engine.decode(codes)
        assert onnx_wave.shape == torch_wave.shape and np.abs(onnx_wave - torch_wave).max() < 1e-3
        assert chunk.samples == chunk.tokens * 2048
    finally:
        engine.close()
    files = list((onnx_cache / "fish-codec-onnx").glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = _load(fish_checkpoint, onnx_cache, "fish-torch+onnx-codec").engine
    try:
        again.prepare()
        assert again.codec_backend == "onnx" and any(n.startswith("ONNX codec decoder cached") for n in again.notes)
        assert files[0].stat().st_mtime_ns == stamp  # never remade
    finally:
        again.close()


def test_an_export_that_disagrees_with_torch_is_refused_and_torch_decodes(fish_checkpoint, onnx_cache):
    import onnx
    from onnx import numpy_helper

    if not list((onnx_cache / "fish-codec-onnx").glob("*.onnx")):  # run alone: export first
        _load(fish_checkpoint, onnx_cache, "fish-torch+onnx-codec").engine.prepare()
    path = next((onnx_cache / "fish-codec-onnx").glob("*.onnx"))
    original = path.read_bytes()
    try:
        proto = onnx.load(str(path))
        init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest weight
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        onnx.save(proto, str(path))
        engine = _load(fish_checkpoint, onnx_cache, "fish-torch+onnx-codec").engine
        try:
            chunk = next(engine.synthesize("Refused export."))
            assert engine.codec_backend == "torch" and engine.backend == "fish-torch"
            assert any("ONNX codec refused: differs from torch" in n for n in engine.notes), engine.notes
            assert chunk.samples == chunk.tokens * 2048 > 0
        finally:
            engine.close()
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("damage", [lambda data: data[: len(data) // 3], lambda data: b"garbage" * 100],
                         ids=["truncated", "garbage"])
def test_a_corrupt_cached_export_is_reported_and_rebuilt_once(fish_checkpoint, onnx_cache, damage):
    import onnx

    if not list((onnx_cache / "fish-codec-onnx").glob("*.onnx")):  # run alone: export first
        _load(fish_checkpoint, onnx_cache, "fish-torch+onnx-codec").engine.prepare()
    path = next((onnx_cache / "fish-codec-onnx").glob("*.onnx"))
    path.write_bytes(damage(path.read_bytes()))
    engine = _load(fish_checkpoint, onnx_cache, "fish-torch+onnx-codec").engine
    try:
        engine.prepare()
        assert engine.codec_backend == "onnx", engine.notes
        assert any(n.startswith(f"cached ONNX codec at {path} was corrupt (") and n.endswith("; rebuilt")
                   for n in engine.notes), engine.notes
    finally:
        engine.close()
    onnx.checker.check_model(str(path))  # the rebuilt file is a valid model
    assert [p.name for p in (onnx_cache / "fish-codec-onnx").iterdir() if p.name.startswith(".")] == []
    again = _load(fish_checkpoint, onnx_cache, "fish-torch+onnx-codec").engine
    try:
        again.prepare()  # rebuilt once: the next load uses the cache without a note about corruption
        assert again.codec_backend == "onnx" and not any("corrupt" in n for n in again.notes), again.notes
    finally:
        again.close()
