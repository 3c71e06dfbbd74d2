"""load_engine of the MPS plugin: where it loads, and how a missing piece becomes a fallback."""

from __future__ import annotations

import sys
import types

import pytest
import voxfit_mps.plugin as mps
from helpers import make_settings
from voxfit.engine import EngineInfo
from voxfit.errors import EngineLoadError
from voxfit.models import ModelSpec, Proposal
from voxfit.registry import Registry
from voxfit_mps import scoring

MODEL = ModelSpec(family="fish", name="s1")


def proposal(plugin="mps", engine=scoring.ENGINE):
    return Proposal(plugin=plugin, device="mps", device_family="mps", engine=engine, precision="fp16")


class FakeEngine:
    backend, sample_rate = "fish-torch", 44100

    def __init__(self, **placed):
        self.placed, self.closed = placed, False

    def synthesize(self, text):
        return iter(())

    def inference_modules(self):
        return []

    def close(self):
        self.closed = True


def engines(loader="fake_fish_adapter:load_fish_engine"):
    """The registry as the core builds it: the fish engine registered by its plugin, with a loader."""
    registry = Registry()
    registry.add_engine(EngineInfo(backend="fish-torch", families=frozenset({"fish"}), loader=loader), plugin="fish")
    return registry


@pytest.fixture
def adapter(monkeypatch):
    """Stands in for the fish engine's loader, which needs torch and fish-speech."""
    module = types.ModuleType("fake_fish_adapter")
    module.load_fish_engine = lambda model, **kw: FakeEngine(**kw)
    monkeypatch.setitem(sys.modules, "fake_fish_adapter", module)
    return module


def test_loads_fish_on_mps_in_fp16_without_compile(adapter):
    settings = make_settings()
    engine = mps.load_engine(proposal(), MODEL, settings, engines())
    assert engine.placed == {"device": "mps", "precision": "fp16", "quantization": "none", "compile": False,
                             "threads": None, "cache_dir": settings.cache_dir,
                             "batch_size": proposal().batch_size,
                             "planned_tokens_per_s": proposal().estimate.tokens_per_s}


def test_missing_adapter_is_a_load_error_the_core_falls_back_from(monkeypatch):
    monkeypatch.setitem(sys.modules, "fake_fish_adapter", None)  # import fails
    with pytest.raises(EngineLoadError, match="Fish Speech engine cannot be loaded"):
        mps.load_engine(proposal(), MODEL, make_settings(), engines())
    with pytest.raises(EngineLoadError, match="no installed plugin registered engine 'fish-torch'"):
        mps.load_engine(proposal(), MODEL, make_settings(), Registry())


def test_coreml_path_without_a_codec_hook_closes_the_engine_and_says_why(adapter):
    made = []
    adapter.load_fish_engine = lambda model, **kw: made.append(FakeEngine(**kw)) or made[-1]
    with pytest.raises(EngineLoadError, match="Core ML decoder cannot be attached"):
        mps.load_engine(proposal(engine=scoring.COREML_ENGINE), MODEL, make_settings(), engines())
    assert made[0].closed
