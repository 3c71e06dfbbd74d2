"""The conformance kit passes every first-party plugin and both examples, and catches real violations."""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import voxfit.engines.fish.plugin
import voxfit_cpu_onnx.plugin
import voxfit_cuda.plugin
import voxfit_mps.plugin
import voxfit_wsl.plugin
from helpers import REPO
from voxfit.engines.fish.tiny import s1_mini_llm_config
from voxfit.testing.conformance import assert_conformant, check_plugin

HARDWARE = REPO / "tests" / "data" / "hardware"
EXAMPLES = REPO / "docs" / "examples"


@pytest.fixture(scope="module")
def s1_mini(tmp_path_factory) -> Path:
    """An S1-mini-shaped Fish Speech checkpoint without weights (sparse files): plans, never loads."""
    directory = tmp_path_factory.mktemp("m") / "openaudio-s1-mini"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(s1_mini_llm_config()))
    for name, size in (("codec.pth", 1600 * 2**20), ("model.pth", 1400 * 2**20)):
        with open(directory / name, "wb") as f:
            f.truncate(size)
    (directory / "tokenizer.tiktoken").write_text("IQ== 0\n")
    (directory / "special_tokens.json").write_text("{}")
    return directory


@pytest.fixture
def examples(monkeypatch):
    for project in ("voxfit-beep", "voxfit-npu"):
        monkeypatch.syspath_prepend(str(EXAMPLES / project / "src"))
    return importlib.import_module("voxfit_beep"), importlib.import_module("voxfit_npu")


# -- first-party plugins and the examples pass -------------------------------------------------


def test_cpu_onnx_conforms_and_speaks_with_the_embedded_voice():
    assert_conformant(voxfit_cpu_onnx.plugin)  # its own default model: the embedded Piper voice, loaded


@pytest.mark.parametrize(("module", "profile"), [
    (voxfit_cuda.plugin, "rtx3060"),
    (voxfit_cuda.plugin, "two-gpu-one-busy"),
    (voxfit_mps.plugin, "m1-air-8gb"),
    (voxfit_mps.plugin, "m3-max-64gb"),
    (voxfit_wsl.plugin, "wsl2-rtx3060"),
    (voxfit.engines.fish.plugin, "rtx3060"),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_hardware_plugins_conform_on_saved_profiles(module, profile, s1_mini):
    # Their engines cannot run on this CPU-only machine: their proposals are checked against the profile.
    assert_conformant(module, model=str(s1_mini), hardware=HARDWARE / f"{profile}.json", load=False)


@pytest.mark.slow
def test_the_cores_fish_plugin_conforms_with_a_real_tiny_checkpoint(fish_checkpoint, tmp_path):
    # Loaded through the cpu_onnx plugin's CPU proposal, the fish engine speaks (noise: random weights).
    assert_conformant(voxfit.engines.fish.plugin, model=str(fish_checkpoint),
                      options={"max_new_tokens": 16, "seed": 0})


def test_both_examples_conform(examples, tmp_path, monkeypatch):
    beep, npu = examples
    model = tmp_path / "high.beep"
    model.write_text(json.dumps({"format": "beep", "pitch_hz": 660, "sample_rate": 16000}))
    assert_conformant(beep)  # its own default model
    assert_conformant(beep, model=str(model), options={"pitch_hz": 880})
    monkeypatch.setenv("DEMO_NPU_FAKE", "1")
    monkeypatch.delenv("DEMO_NPU_VISIBLE_DEVICES", raising=False)
    assert_conformant(npu, model=str(model), with_plugins=[("beep", beep)])
    # The core applied the npu plugin's prepare_env to load its engine; the kit put the environment back.
    assert "DEMO_NPU_VISIBLE_DEVICES" not in os.environ


def test_the_npu_example_needs_the_engine_plugin_it_places(examples, tmp_path, monkeypatch):
    beep, npu = examples
    model = tmp_path / "x.beep"
    model.write_text(json.dumps({"format": "beep"}))
    monkeypatch.setenv("DEMO_NPU_FAKE", "1")
    # Without the beep plugin nothing resolves a .beep file: the kit says why it could not check.
    problems = check_plugin(npu, model=str(model), load=False)
    assert len(problems) == 1 and "x.beep is not a model voxfit knows" in problems[0]


# -- the kit catches real violations ------------------------------------------------------


BARE_HEADER = '''
import os
from typing import Callable, Iterator
from voxfit.sdk import AudioChunk, EngineInfo, EnvChange, ModelSpec, PlanInputs, Proposal, hookimpl
VOXFIT_HOOK_API = "2.1"
'''
HEADER = BARE_HEADER + '''
@hookimpl
def plan_inputs():
    return PlanInputs(environ=["ACME_DECLARED"])
'''

ODD_ENGINE = '''
class OddEngine:
    backend = "odd"
    sample_rate = 16000

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        yield AudioChunk(pcm=PCM, sample_rate=16000, text=text)

    def inference_modules(self):
        return []

    def close(self):
        pass


@hookimpl
def register_engines(register):
    register(EngineInfo(backend="odd", families=frozenset({"odd"}), description="odd", loader="os:getcwd"))


@hookimpl
def default_model():
    return ModelSpec(family="odd", name="odd-voice", sample_rate=16000)


@hookimpl
def score_config(model):
    if model.family != "odd":
        return None
    return [Proposal(device="cpu", device_family="cpu", engine="odd", score=1.0, reasons=["the odd engine"])]


@hookimpl
def load_engine():
    return OddEngine()
'''


def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str, header: str = HEADER):
    """A plugin module written as a file (so the kit's fresh process can import it too)."""
    (tmp_path / f"{name}.py").write_text(header + textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_a_heavy_import_in_detect_is_caught_even_when_the_test_process_already_has_it(tmp_path, monkeypatch):
    (tmp_path / "fakeheavy.py").write_text("WEIGHT = 1\n")
    module = plugin(tmp_path, monkeypatch, "heavy_detect", '''
        @hookimpl
        def detect():
            import fakeheavy  # noqa: F401
            return None
    ''')
    importlib.import_module("fakeheavy")  # already imported here: a check in this process would miss it
    problems = check_plugin(module, heavy=("fakeheavy",), load=False)
    assert problems == ["detect: imports fakeheavy (never import a framework while the core plans; "
                        "do it in load_engine)"]
    assert check_plugin(module, load=False) == []  # not heavy by the default list


def test_a_detect_without_declared_inputs_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "undeclared_detect", '''
        @hookimpl
        def detect():
            return None
    ''', header=BARE_HEADER)
    problems = check_plugin(module, load=False)
    assert len(problems) == 1 and problems[0].startswith("detect is implemented but plan_inputs is not")


def test_planning_hooks_reading_what_plan_inputs_does_not_declare_are_caught(tmp_path, monkeypatch):
    driver = Path(tempfile.mkdtemp()) / "driver-version"  # outside the plugin's directory, which is on sys.path
    driver.write_text("1.0")
    module = plugin(tmp_path, monkeypatch, "sneaky_reads", f'''
        @hookimpl
        def detect():
            os.environ.get("ACME_DECLARED")
            os.environ.get("ACME_VISIBLE_DEVICES")
            with open({str(driver)!r}) as handle:
                handle.read()
            return None

        @hookimpl
        def prepare_env(proposal):
            return [] if "ACME_MODE" in os.environ else None
    ''')
    problems = check_plugin(module, load=False)
    suffix = ", which plan_inputs does not declare (a remembered plan would be reused after it changed)"
    assert sorted(problems) == sorted(dict.fromkeys([
        f"detect: reads environment variable ACME_VISIBLE_DEVICES{suffix}",
        f"detect: reads {driver}{suffix}",
        f"prepare_env: reads environment variable ACME_MODE{suffix}",
    ]))


def test_a_slow_detect_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "slow_detect", '''
        import time

        @hookimpl
        def detect():
            time.sleep(0.3)
    ''')
    problems = check_plugin(module, detect_seconds=0.1, load=False)
    assert len(problems) == 1 and problems[0].startswith("detect: took 0.") and "at most 0.1 s" in problems[0]


def test_prepare_env_writing_os_environ_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "env_writer", '''
        import os

        @hookimpl
        def prepare_env(proposal):
            os.environ["SNEAKY_THREADS"] = "1"
            return [EnvChange(kind="set_env", key="OMP_NUM_THREADS", value="1", reason="")]
    ''')
    monkeypatch.delenv("SNEAKY_THREADS", raising=False)
    problems = check_plugin(module, load=False)
    assert any(p.startswith("prepare_env: changes os.environ (SNEAKY_THREADS)") for p in problems), problems
    assert any("OMP_NUM_THREADS" in p and "has no reason" in p for p in problems), problems
    assert "SNEAKY_THREADS" not in os.environ  # the kit called it in its own process


def test_an_undocumented_hook_argument_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "bad_args", '''
        @hookimpl
        def detect(host, gpu_index):
            return None

        @hookimpl
        def score_config(model, settings=None):
            return None

        @hookimpl
        def load_egnine(proposal):
            return None
    ''')
    problems = check_plugin(module, load=False)
    assert "detect: accepts 'gpu_index', which the detect hook does not pass (it passes: host, settings)" in problems
    assert ("score_config: argument 'settings' has a default, so pluggy never passes it (drop the default)"
            in problems)
    assert any(p.startswith("load_egnine: implements no known hook") for p in problems), problems
    assert any(p.startswith("the core does not load it: broken") for p in problems), problems


def test_proposals_without_reasons_or_with_an_unknown_engine_are_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "bad_proposals", '''
        @hookimpl
        def score_config(model):
            return [
                Proposal(device="cpu", device_family="cpu", engine="piper-onnx", score=1.0),
                Proposal(device="cpu", device_family="cpu", engine="warp-drive", score=1.0, reasons=["fast"]),
                Proposal(device="tpu:0", device_family="tpu", engine="piper-onnx", reasons=["a tpu"]),
            ]
    ''')
    problems = check_plugin(module, load=False)
    assert problems == [
        "score_config proposal piper-onnx on cpu: no reason (say why, in words a user reads in `voxfit plan`)",
        "score_config proposal warp-drive on cpu: engine 'warp-drive' is registered by no plugin (register it "
        "with register_engines, or install the plugin that does)",
        "score_config proposal piper-onnx on tpu:0: device 'tpu:0' is not in the hardware profile",
    ]


def test_a_wrapper_dropping_proposals_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "greedy_wrapper", '''
        @hookimpl(wrapper=True)
        def score_config():
            proposals = yield
            return proposals[:1]
    ''')
    # The embedded Piper voice: the cpu_onnx plugin proposes several variants for the wrapper to work on.
    problems = check_plugin(module, load=False)
    assert len(problems) == 1 and problems[0].startswith("score_config: the wrapper dropped "), problems
    assert problems[0].endswith("of the proposals it was given (veto them with a reason instead)")


def test_invalid_registrations_are_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "bad_registrations", '''
        from pydantic import BaseModel
        from voxfit.sdk import DeviceFamilyInfo

        class Needy(BaseModel):
            speaker: str  # no default: a run without -O could never validate

        @hookimpl
        def register_engines(register):
            register(EngineInfo(backend="Bad Name", families=frozenset({"x"})))
            register(EngineInfo(backend="needy", families=frozenset(), options=Needy, loader="nowhere_at_all:load"))

        @hookimpl
        def register_device_families(register):
            register(DeviceFamilyInfo(name="auto"))
            register(DeviceFamilyInfo(name="npx"))
    ''')
    problems = check_plugin(module, load=False)
    expected = [
        "register_engines: engine backend 'Bad Name' must be lowercase letters, digits and _+.- (at most 64)",
        "register_device_families: 'auto' is not a device family: it means 'let the plan choose'",
        "engine 'needy': runs no model family (families is empty)",
        "engine 'needy': no description (users read it in `voxfit engines`)",
        "engine 'needy': loader module 'nowhere_at_all' cannot be found",
        "device family 'npx': no description (users read it in `voxfit engines`)",
    ]
    for line in expected:
        assert line in problems, problems
    assert any(p.startswith("engine 'needy': its options model cannot be built without options") for p in problems)


def test_a_wrong_return_type_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "wrong_type", '''
        @hookimpl
        def detect():
            return {"devices": "cuda:0"}
    ''')
    problems = check_plugin(module, load=False)
    assert len(problems) == 1 and problems[0].startswith("detect: returned the wrong type: dict")


def test_an_engine_yielding_odd_length_pcm_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "odd_pcm", 'PCM = b"\\x01\\x00\\x02"\n' + ODD_ENGINE)
    problems = check_plugin(module)
    assert problems == ["engine odd: synthesize('Hello there.'): chunk 0 has 3 bytes, an odd length "
                        "(16-bit PCM has 2 bytes per sample)"]


def test_an_engine_yielding_silence_is_caught(tmp_path, monkeypatch):
    module = plugin(tmp_path, monkeypatch, "silent_pcm", 'PCM = bytes(3200)\n' + ODD_ENGINE)
    assert check_plugin(module) == ["engine odd: synthesize('Hello there.'): every sample is zero (silence)"]


def test_a_conformant_stand_in_passes_and_assert_conformant_lists_every_problem(tmp_path, monkeypatch):
    good = plugin(tmp_path, monkeypatch, "good_pcm", 'PCM = b"\\x01\\x00" * 1600\n' + ODD_ENGINE)
    assert check_plugin(good) == []
    bad = plugin(tmp_path, monkeypatch, "old_api", '''
        VOXFIT_HOOK_API = "1.0"

        @hookimpl
        def score_config(model):
            return [Proposal(device="cpu", device_family="cpu", engine="piper-onnx", score=1.0)]
    ''')
    with pytest.raises(AssertionError) as raised:
        assert_conformant(bad, load=False)
    message = str(raised.value)
    # Refused by the core, it is checked no further: the message says why and where to read on.
    assert message.startswith("plugin old_api does not conform (2 problems):")
    assert "hook API: built for hook API 1.0, the core speaks 2.1" in message
    assert "the core does not load it: refused" in message
    assert "Upgrading from hook API 1.x" in message


def test_the_kit_is_light_to_import():
    import subprocess

    code = ("import sys, voxfit.testing.conformance; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'pytest', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
