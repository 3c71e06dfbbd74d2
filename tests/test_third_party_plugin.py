"""The example from docs/writing-a-plugin.md, built and installed as a real distribution."""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, ttsfw_cli
from ttsfw.models import Plan

EXAMPLES = REPO / "docs" / "examples"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A directory holding the installed example plugins, put on PYTHONPATH for the CLI."""
    target = tmp_path_factory.mktemp("site")
    for project in ("ttsfw-beep", "ttsfw-broken"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--target", str(target), str(EXAMPLES / project)],
            check=True, capture_output=True, timeout=300,
        )
    return target


def cli(site, *args, **env):
    return ttsfw_cli(*args, env={"PYTHONPATH": str(site), **env})


def test_installed_example_is_listed_and_the_broken_one_isolated(site):
    result = cli(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    beep = infos["beep"]
    assert (beep["status"], beep["distribution"], beep["version"]) == ("ok", "ttsfw-beep", "0.1.0")
    assert beep["hooks"] == ["detect", "disable_training_artifacts", "load_engine", "prepare_env", "score_config"]
    broken = infos["broken"]
    assert broken["status"] == "broken" and "a_module_that_does_not_exist" in broken["error"]
    assert infos["cpu_onnx"]["status"] == "ok"


def test_example_is_ranked_and_explained(site):
    result = cli(site, "plan", "--json")  # the embedded voice
    assert result.returncode == 0, result.stderr
    plan = Plan.model_validate_json(result.stdout)
    beep = [p for p in plan.ranked() if p.plugin == "beep"]
    assert beep and "beeps once per word" in beep[0].reasons[0]
    assert any("beep can run on any" in note for note in plan.hardware.notes)


def test_strict_mode_refuses_to_run_with_the_broken_plugin(site):
    result = cli(site, "--strict", "plugins")
    err = result.stderr.decode()
    assert result.returncode != 0 and err.startswith("error: plugin 'broken' broken") and "Traceback" not in err


def test_example_engine_runs_through_the_core_runtime(site):
    # plan -> prepare_env -> load_engine -> disable_training_artifacts -> check, through entry points.
    code = """
import json, os, sys
from ttsfw.planner import make_plan
from ttsfw.plugins import PluginHost
from ttsfw.runtime import load
from ttsfw.settings import Settings
host = PluginHost.from_entry_points(Settings(allow_plugins=["beep"]))
plan = make_plan(host)
loaded = load(host, plan)
chunk = next(loaded.engine.synthesize("three short words"))
print(json.dumps({"plugin": loaded.proposal.plugin, "env": os.environ.get("TTSFW_BEEP_ACTIVE"),
                  "actions": loaded.artifacts_disabled, "seconds": chunk.seconds}))
"""
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["plugin"] == "beep" and out["env"] == "1"
    assert out["actions"] == ["beep engine: nothing to disable (no trainable state)"]
    assert out["seconds"] == pytest.approx(3 * 0.15)  # 3 words x (0.1 s beep + 0.05 s gap)


def _python_blocks(markdown: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in markdown.splitlines():
        if line.startswith("```python"):
            inside, current = True, []
        elif line.startswith("```") and inside:
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


@pytest.mark.parametrize("hook", ["detect", "score_config", "prepare_env", "load_engine", "disable_training_artifacts"])
def test_the_walkthrough_shows_the_examples_real_code(hook):
    # The guide must not drift from the example the tests install.
    source = (EXAMPLES / "ttsfw-beep" / "src" / "ttsfw_beep" / "__init__.py").read_text()
    doc = (REPO / "docs" / "writing-a-plugin.md").read_text()
    shown = next(b for b in _python_blocks(doc) if f"def {hook}(" in b and "@hookimpl\n" in b)
    start = shown.index(f"@hookimpl\ndef {hook}(")
    snippet = shown[start:].split("\n\n\n")[0]
    assert snippet in source
