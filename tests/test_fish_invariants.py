"""Training artifacts on REAL fish-speech modules: the hook removes them, the core's check catches each one."""

import re

import pytest
import torch
from fish_helpers import load
from torch import nn
from torch.nn.utils import parametrize
from voxfit.engines.fish import engine as fish_torch
from voxfit.errors import InvariantViolation
from voxfit.speaking import invariants


@pytest.fixture()
def engine(fish_checkpoint):
    e = load(fish_checkpoint)
    yield e
    e.close()


def test_the_loader_returns_what_fish_speech_leaves_and_the_check_sees_all_of_it(fish_checkpoint):
    dirty = load(fish_checkpoint, clean=False)
    try:
        found = " | ".join(invariants.violations(dirty.inference_modules()))
        for kind in ("training mode", "track gradients", "gradient checkpointing", "weight-norm"):
            assert kind in found
        with pytest.raises(InvariantViolation, match="still carries training artifacts"):
            next(dirty.synthesize("Not like this."))
    finally:
        dirty.close()


def test_cleanup_reports_each_action_then_leaves_nothing_and_is_idempotent(fish_checkpoint):
    e = load(fish_checkpoint, clean=False)
    try:
        actions = " | ".join(fish_torch.disable_training_artifacts(e))
        assert "LLM: eval mode" in actions and "codec: eval mode" in actions
        assert "gradient tracking off" in actions and "gradient checkpointing off in 2 configs" in actions
        assert "60 parametrizations, 8 legacy hooks" in actions
        assert invariants.violations(e.inference_modules()) == []
        assert fish_torch.disable_training_artifacts(e) == []
        # what the check reads, seen directly
        assert not any(m.training for m in e.codec.modules())
        assert not any(isinstance(m, nn.Dropout) and m.training for m in e.codec.modules())
        assert not any(p.requires_grad for p in e.llm.parameters())
        assert not any(getattr(getattr(m, "config", None), "use_gradient_checkpointing", False)
                       for m in e.llm.modules())
        assert not any(parametrize.is_parametrized(m) or hasattr(m, "weight_g") for m in e.codec.modules())
    finally:
        e.close()


def test_codec_in_training_mode_encodes_at_random_and_clean_it_does_not(fish_checkpoint):
    e = load(fish_checkpoint, clean=False)
    try:
        x = torch.randn(1, 1, 44100) * 0.1
        with torch.inference_mode():
            torch.manual_seed(0)
            train_a, _ = e.codec.encode(x)
            train_b, _ = e.codec.encode(x)
        fish_torch.disable_training_artifacts(e)
        with torch.inference_mode():
            eval_a, _ = e.codec.encode(x)
            eval_b, _ = e.codec.encode(x)
        assert not torch.equal(train_a, train_b)  # quantizer dropout drops codebooks at random
        assert torch.equal(eval_a, eval_b)
    finally:
        e.close()


def test_folding_weight_norm_leaves_the_decoded_audio_unchanged(fish_checkpoint):
    e = load(fish_checkpoint, clean=False)
    try:
        e.codec.eval()
        codes = torch.randint(0, 1024, (1, 4, 9))
        with torch.inference_mode():
            before, _ = e.codec.decode(codes, torch.tensor([9]))
        fish_torch.disable_training_artifacts(e)
        with torch.inference_mode():
            after, _ = e.codec.decode(codes, torch.tensor([9]))
        assert torch.allclose(before, after, atol=1e-6)
    finally:
        e.close()


def _first(module, kind):
    return next(m for m in module.modules() if isinstance(m, kind))


def _reintroduce_dropout(e):
    _first(e.codec, nn.Dropout).train()


def _reintroduce_train_mode_llm(e):
    e.llm.layers[0].train()


def _reintroduce_grad(e):
    e.llm.layers[1].feed_forward.w1.weight.requires_grad_(True)


def _reintroduce_checkpointing_on_model_config(e):
    e.llm.config.use_gradient_checkpointing = True


def _reintroduce_checkpointing_on_fast_layer_config(e):
    # the fast layers' attention holds its own copy of the config (dataclasses.replace)
    e.llm.fast_layers[0].attention.config.use_gradient_checkpointing = True


def _reintroduce_parametrized_weight_norm(e):
    conv = _first(e.codec.decoder, nn.Conv1d)
    torch.nn.utils.parametrizations.weight_norm(conv)
    conv.requires_grad_(False).eval()  # isolate the artifact under test (the new modules start in training)


def _reintroduce_legacy_weight_norm(e):
    conv = _first(e.codec.quantizer, nn.Conv1d)
    torch.nn.utils.weight_norm(conv)
    conv.requires_grad_(False)
    assert hasattr(conv, "weight_g")


@pytest.mark.parametrize(
    "reintroduce,expected",
    [
        (_reintroduce_dropout, "modules in training mode \\(dropout active\\): DAC#1"),
        (_reintroduce_train_mode_llm, "modules in training mode .*DualARTransformer.layers.0"),
        (_reintroduce_grad, "1 parameters track gradients: DualARTransformer.layers.1.feed_forward.w1.weight"),
        (_reintroduce_checkpointing_on_model_config, "gradient checkpointing on in DualARTransformer"),
        (_reintroduce_checkpointing_on_fast_layer_config, "checkpointing on in DualARTransformer.fast_layers.0"),
        (_reintroduce_parametrized_weight_norm, "1 weight-norm parametrizations left: DAC#1.decoder"),
        (_reintroduce_legacy_weight_norm, "1 weight-norm parametrizations left: DAC#1.quantizer"),
    ],
    ids=["dropout", "train-mode", "requires-grad", "checkpointing-config", "checkpointing-fast-config",
         "weight-norm-parametrization", "weight-norm-legacy-hook"],
)
def test_the_core_check_catches_each_artifact_on_real_modules(engine, reintroduce, expected):
    assert invariants.violations(engine.inference_modules()) == []
    reintroduce(engine)
    found = invariants.violations(engine.inference_modules())
    assert len(found) == 1, found  # exactly the artifact put back, nothing else
    assert re.search(expected, found[0]), found[0]
    engine._prepared = False
    with pytest.raises(InvariantViolation):
        next(engine.synthesize("Refused."))


def test_the_cores_own_hook_cleans_a_fish_engine_whichever_plugin_wrapped_it(fish_checkpoint):
    """A GPU plugin loads the core's fish adapter and wraps it (the CUDA plugin samples NVML around it);
    with no cpu_onnx plugin installed, the core's built-in hook must still clean it, or the core refuses."""
    import types

    from helpers import make_host
    from voxfit import hookimpl
    from voxfit.models import HardwareProfile, Proposal
    from voxfit.planning.planner import make_plan
    from voxfit.speaking.load import load as runtime_load

    class Wrapper:
        def __init__(self, inner):
            self.inner, self.backend, self.sample_rate = inner, inner.backend, inner.sample_rate

        def synthesize(self, text):
            return self.inner.synthesize(text)

        def inference_modules(self):
            return self.inner.inference_modules()

        def close(self):
            self.inner.close()

    gpu = types.SimpleNamespace(VOXFIT_HOOK_API="2.0")
    gpu.score_config = hookimpl(lambda: [Proposal(device="cpu", device_family="cpu", engine="fish-torch")])
    gpu.load_engine = hookimpl(lambda proposal, model: Wrapper(fish_torch.load_fish_engine(
        model, device="cpu", precision="fp32", quantization="none", compile=False, threads=1)))
    host = make_host(("wrapping_gpu", gpu))
    from helpers import resolve

    plan = make_plan(host, model=resolve(str(fish_checkpoint)),
                     hardware=HardwareProfile(os="linux", arch="x86_64", memory_available_bytes=8 << 30))
    assert ("TQDM_DISABLE", "fish") in {(c.key, c.plugin) for c in plan.env_changes}
    loaded = runtime_load(host, plan)
    try:
        assert any("eval mode" in line for line in loaded.artifacts_disabled)
        assert invariants.violations(loaded.engine.inference_modules()) == []
        assert sum(chunk.samples for chunk in loaded.engine.synthesize("Cleaned by the core.")) > 0
    finally:
        loaded.engine.close()
