"""plan -> prepare_env -> load_engine (with fallback) -> disable_training_artifacts -> the core's check."""

import os
import types

import pytest
from helpers import cpu_profile, make_host, piper_spec
from voxfit import hookimpl
from voxfit.engine import AudioChunk
from voxfit.errors import EngineLoadError, InvariantViolation, NoFeasiblePlan
from voxfit.models import EnvChange, Proposal
from voxfit.planning.planner import make_plan
from voxfit.speaking.load import apply_env, load


class Param:
    def __init__(self, requires_grad):
        self.requires_grad = requires_grad


class FakeModule:
    """Duck-typed like torch.nn.Module, enough for the invariant check."""

    def __init__(self, name="", children=(), training=False, grad=False, checkpointing=False, weight_norm=False):
        self.name, self.children, self.training = name, list(children), training
        self._grad = grad
        if checkpointing:
            self.use_gradient_checkpointing = True
        self._forward_pre_hooks = {1: type("WeightNorm", (), {})()} if weight_norm else {}

    def named_modules(self, prefix=""):
        yield prefix, self
        for child in self.children:
            yield from child.named_modules(f"{prefix}.{child.name}" if prefix else child.name)

    def named_parameters(self):
        for name, module in self.named_modules():
            yield f"{name}.weight" if name else "weight", Param(module._grad)

    def eval(self):
        for _, m in self.named_modules():
            m.training = False


class ToyEngine:
    backend = "toy"
    sample_rate = 8000

    def __init__(self, modules=()):
        self.modules = list(modules)
        self.closed = False

    def synthesize(self, text):
        yield AudioChunk(pcm=b"\x00\x00" * 80, sample_rate=8000, text=text)

    def inference_modules(self):
        return self.modules

    def close(self):
        self.closed = True


def owner_plugin(name, score, engine_factory=None, error=None, env=None, cleanup=False):
    module = types.SimpleNamespace(VOXFIT_HOOK_API="2.0", loaded=[])

    @hookimpl
    def score_config():
        return [Proposal(device="cpu", device_family="cpu", engine="toy", score=score, reasons=[f"{name} reason"])]

    @hookimpl
    def prepare_env(proposal):
        if proposal.plugin != name or env is None:
            return None
        return [EnvChange(kind="set_env", key=env[0], value=env[1], reason="test")]

    @hookimpl
    def load_engine(proposal):
        if proposal.plugin != name:
            return None
        if error is not None:
            raise error
        engine = engine_factory()
        module.loaded.append(engine)
        return engine

    @hookimpl
    def disable_training_artifacts(engine):
        if not cleanup:
            return None
        for m in engine.inference_modules():
            m.eval()
        return ["set eval mode"]

    module.score_config, module.prepare_env, module.load_engine = score_config, prepare_env, load_engine
    module.disable_training_artifacts = disable_training_artifacts
    return module


def plan_for(host):
    return make_plan(host, hardware=cpu_profile(), model=piper_spec())


def test_chosen_proposal_loads_after_its_env_is_applied(monkeypatch):
    monkeypatch.delenv("VOXFIT_TEST_VAR", raising=False)
    seen = {}

    def factory():
        seen["env"] = os.environ.get("VOXFIT_TEST_VAR")
        return ToyEngine()

    host = make_host(("best", owner_plugin("best", 2.0, factory, env=("VOXFIT_TEST_VAR", "on"))),
                     ("other", owner_plugin("other", 1.0, ToyEngine)))
    plan = plan_for(host)
    assert [c.key for c in plan.env_changes] == ["VOXFIT_TEST_VAR"]  # shown before anything runs
    loaded = load(host, plan)
    assert loaded.proposal.plugin == "best" and not loaded.fell_back
    assert seen["env"] == "on"  # applied before load_engine ran
    assert [c.key for c in loaded.env_applied] == ["VOXFIT_TEST_VAR"]


@pytest.mark.parametrize("error", [EngineLoadError("CUDA out of memory"), RuntimeError("CUDA out of memory")])
def test_failed_load_falls_back_to_the_next_proposal_and_says_why(error):
    host = make_host(("best", owner_plugin("best", 2.0, ToyEngine, error=error)),
                     ("other", owner_plugin("other", 1.0, ToyEngine)))
    loaded = load(host, plan_for(host))
    assert loaded.proposal.plugin == "other" and loaded.fell_back
    first, second = loaded.attempts
    assert not first.ok and "CUDA out of memory" in first.reason and second.ok


def test_nothing_loads_is_one_error_listing_every_attempt():
    host = make_host(("a", owner_plugin("a", 2.0, ToyEngine, error=EngineLoadError("no driver"))),
                     ("b", owner_plugin("b", 1.0, ToyEngine, error=EngineLoadError("no memory"))))
    with pytest.raises(EngineLoadError, match="no driver.*no memory"):
        load(host, plan_for(host))


def test_no_feasible_plan_is_refused():
    host = make_host()
    with pytest.raises(NoFeasiblePlan, match=r"no loaded plugin \(fish, test_engines\) proposed a way to run piper"):
        load(host, plan_for(host))


@pytest.mark.parametrize(
    "module,expected",
    [
        (FakeModule("root", [FakeModule("dropout", training=True)]), "modules in training mode"),
        (FakeModule("root", [FakeModule("proj", grad=True)]), "parameters track gradients"),
        (FakeModule("root", [FakeModule("layers", checkpointing=True)]), "gradient checkpointing on"),
        (FakeModule("root", [FakeModule("conv", weight_norm=True)]), "weight-norm parametrizations left"),
    ],
)
def test_core_refuses_an_engine_that_still_carries_a_training_artifact(module, expected):
    host = make_host(("a", owner_plugin("a", 1.0, lambda: ToyEngine([module]))))
    with pytest.raises(InvariantViolation, match=expected):
        load(host, plan_for(host))
    assert host.pm.get_plugin("a") is not None


def test_hook_cleanup_satisfies_the_check_and_is_reported():
    dirty = FakeModule("root", [FakeModule("dropout", training=True)], training=True)
    host = make_host(("a", owner_plugin("a", 1.0, lambda: ToyEngine([dirty]), cleanup=True)))
    loaded = load(host, plan_for(host))
    assert loaded.artifacts_disabled == ["set eval mode"]
    assert not any(m.training for _, m in dirty.named_modules())


def test_apply_env_kinds():
    environ = {"PATH_LIKE": "/b:/c"}
    apply_env([
        EnvChange(kind="set_env", key="A", value="1", reason="r"),
        EnvChange(kind="prepend_path", key="PATH_LIKE", value="/a", reason="r"),
        EnvChange(kind="prepend_path", key="PATH_LIKE", value="/a", reason="twice is once"),
        EnvChange(kind="unset_env", key="GONE", reason="r"),
    ], environ)
    assert environ == {"A": "1", "PATH_LIKE": "/a:/b:/c"}
