"""The examples from docs/writing-a-plugin.md, built and installed as real distributions, used through the CLI.

``voxfit-beep`` is an engine plugin (the .beep model format, the beep engine,
its ``pitch_hz`` voice option); ``voxfit-npu`` a hardware plugin for a device
family the core has never heard of (a demo NPU, faked with DEMO_NPU_FAKE=1),
which places the beep engine on its device. ``voxfit-broken`` fails on import,
and a hook API 1.0 plugin must be refused with the upgrade message.
"""

import ast
import json
import os
import subprocess
import sys
import wave
from typing import Optional

import numpy as np
import pytest
from helpers import REPO, quiet_cpu_site, voxfit_cli
from voxfit.models import Plan

EXAMPLES = REPO / "docs" / "examples"
FAKE_NPU = {"DEMO_NPU_FAKE": "1"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A directory holding the installed example plugins, put on PYTHONPATH for the CLI."""
    target = tmp_path_factory.mktemp("site")
    for project in ("voxfit-beep", "voxfit-npu", "voxfit-broken"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--target", str(target), str(EXAMPLES / project)],
            check=True, capture_output=True, timeout=300,
        )
    # A plugin built for hook API 1.0, installed as a distribution with an entry point.
    (target / "voxfit_old.py").write_text('VOXFIT_HOOK_API = "1.0"\n')
    info = target / "voxfit_old-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: voxfit-old\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text("[voxfit]\nold = voxfit_old\n")
    return target


@pytest.fixture
def beep_file(tmp_path):
    path = tmp_path / "voice.beep"
    path.write_text(json.dumps({"format": "beep", "pitch_hz": 440, "sample_rate": 16000}))
    return path


def cli(site, *args, **env):
    return voxfit_cli(*args, env={"PYTHONPATH": str(site), **env})


def cli_on_a_quiet_cpu(site, tmp_path, *args, **env):
    """`cli` with the CPU read as quiet, for two commands whose plan cache keys must differ only as tested."""
    path = os.pathsep.join([quiet_cpu_site(tmp_path / "quiet-cpu"), str(site)])
    return voxfit_cli(*args, env={**env, "PYTHONPATH": path})


def one_line_error(result) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_installed_examples_are_listed_the_broken_one_isolated_the_old_one_refused(site):
    result = cli(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    beep, npu = infos["beep"], infos["npu"]
    assert (beep["status"], beep["distribution"], beep["version"], beep["api_version"]) == (
        "ok", "voxfit-beep", "0.2.0", "2.1")
    assert beep["hooks"] == ["default_model", "disable_training_artifacts", "load_engine", "register_engines",
                             "resolve_model", "score_config"]
    assert (npu["status"], npu["distribution"]) == ("ok", "voxfit-npu")
    assert npu["hooks"] == ["detect", "load_engine", "plan_inputs", "prepare_env", "register_device_families",
                            "score_config"]
    broken = infos["broken"]
    assert broken["status"] == "broken" and "a_module_that_does_not_exist" in broken["error"]
    old = infos["old"]
    assert old["status"] == "refused" and old["api_version"] == "1.0"
    assert "the core speaks 2.1" in old["error"] and "'Upgrading from hook API 1.x'" in old["error"]
    assert "Upgrading from hook API 1.x" in (REPO / "docs" / "writing-a-plugin.md").read_text()
    assert infos["cpu_onnx"]["status"] == "ok"


def test_engines_lists_the_beep_engine_its_option_and_the_npu_family(site):
    result = cli(site, "engines", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    beep = next(e for e in data["engines"] if e["engine"] == "beep")
    assert (beep["plugin"], beep["families"], [o["name"] for o in beep["options"]]) == ("beep", ["beep"], ["pitch_hz"])
    assert beep["options"][0] == {"name": "pitch_hz", "type": "number", "range": ">= 20.0 and <= 20000.0",
                                  "default": 440.0, "description": "Pitch of the beeps in Hz."}
    assert "npu" in data["device_families"]
    text = cli(site, "engines").stdout.decode()
    assert "beep  (plugin beep; runs beep models)\n" in text
    assert "      pitch_hz  number, >= 20.0 and <= 20000.0 (default: 440.0)  Pitch of the beeps in Hz.\n" in text


def test_plan_for_the_npu_chooses_it_and_locks_it(site, beep_file):
    result = cli(site, "plan", "--device", "npu", "--model", str(beep_file), "--json", **FAKE_NPU)
    assert result.returncode == 0, result.stderr
    plan = Plan.model_validate_json(result.stdout)
    assert (plan.model.family, plan.model.resolved_by, plan.device_lock) == ("beep", "beep", "npu")
    chosen = plan.chosen
    assert (chosen.plugin, chosen.device, chosen.device_family, chosen.engine) == ("npu", "npu:0", "npu", "beep")
    assert chosen.reasons == ["runs the beep engine on Demo NPU (fake), leaving the CPU free"]
    cpu = [r for r in plan.rejected if r.proposal.plugin == "beep"]
    assert len(cpu) == 1 and "device locked to npu" in cpu[0].reasons[0]
    assert [(c.key, c.value, c.plugin) for c in plan.env_changes] == [("DEMO_NPU_VISIBLE_DEVICES", "0", "npu")]
    # Unlocked, the NPU still wins on the shared scale (its estimate is twice the CPU beeper's speed).
    auto = Plan.model_validate_json(cli(site, "plan", "--model", str(beep_file), "--json", **FAKE_NPU).stdout)
    assert auto.chosen.device == "npu:0" and auto.alternatives[0].device == "cpu"


def test_an_npu_that_appears_after_a_remembered_plan_gets_its_own_plan(site, beep_file, tmp_path):
    cache = {"VOXFIT_CACHE_DIR": str(tmp_path / "cache")}
    plan_json = ("plan", "--model", str(beep_file), "--json")
    without = Plan.model_validate_json(cli_on_a_quiet_cpu(site, tmp_path, *plan_json, **cache).stdout)
    assert without.chosen.device == "cpu" and without.plan_cache.stored  # remembered: a CPU-only plan
    appeared = cli_on_a_quiet_cpu(site, tmp_path, *plan_json, **cache, **FAKE_NPU)
    plan = Plan.model_validate_json(appeared.stdout)
    assert plan.chosen.device == "npu:0" and not plan.plan_cache.reused
    assert "DEMO_NPU_FAKE changed since" in plan.plan_cache.reason  # the input the plugin declared


def test_a_saved_profile_with_a_busy_npu_plans_elsewhere_and_says_why(site, beep_file, tmp_path):
    detected = cli(site, "detect", "--json", **FAKE_NPU)
    assert detected.returncode == 0, detected.stderr
    profile = json.loads(detected.stdout)
    npu = next(d for d in profile["devices"] if d["id"] == "npu:0")
    assert (npu["family"], npu["detected_by"]) == ("npu", "npu")
    npu["flags"] = ["busy"]
    saved = tmp_path / "busy-npu.json"
    saved.write_text(json.dumps(profile))
    # A saved profile needs no fake: the NPU is in it.
    plan = Plan.model_validate_json(cli(site, "plan", "--hardware", str(saved), "--model", str(beep_file),
                                        "--json").stdout)
    assert plan.chosen.device == "cpu"
    busy = plan.alternatives[0]
    assert (busy.device, busy.score, busy.score_factors) == ("npu:0", 80.0, {"busy_npu": 0.4})
    assert busy.reasons[-1] == "the NPU is busy with another process: score x0.4"


def dominant_hz(path) -> tuple[float, float]:
    with wave.open(str(path)) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]), len(samples) / rate


def test_run_on_the_npu_with_a_voice_option(site, beep_file, tmp_path):
    out = tmp_path / "out.wav"
    result = cli(site, "run", "--device", "npu", "--model", str(beep_file), "-O", "pitch_hz=880",
                 "Hello there.", "-o", str(out), "--json", **FAKE_NPU)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["chosen"] == "npu: beep, npu:0, n/a"
    assert report["voice"] == {"pitch_hz": 880.0}
    assert report["env_applied"] == [
        "DEMO_NPU_VISIBLE_DEVICES='0' (npu: the NPU runtime sees only npu:0, the device this plan chose)"]
    # disable_training_artifacts reaches every plugin: the beep plugin cleans its engine though the npu loaded it.
    assert report["artifacts_disabled"] == ["beep engine: nothing to disable (no trainable state)"]
    hz, seconds = dominant_hz(out)
    assert seconds == pytest.approx(2 * 0.15, abs=0.02)  # two words x (0.1 s beep + 0.05 s gap)
    assert hz == pytest.approx(880, abs=10)
    # Without the option the voice's own pitch applies.
    plain = tmp_path / "plain.wav"
    result = cli(site, "run", "--device", "npu", "--model", str(beep_file), "Hello there.", "-o", str(plain),
                 **FAKE_NPU)
    assert result.returncode == 0, result.stderr
    assert dominant_hz(plain)[0] == pytest.approx(440, abs=10)


@pytest.mark.parametrize(("option", "expected"), [
    ("pitch_hz=abc", "error: option pitch_hz='abc' for the beep engine: Input should be a valid number"),
    ("nosuch=1", "error: option nosuch does not apply to the beep engine (it takes: pitch_hz)"),
    ("pitch_hz=10", "error: option pitch_hz='10' for the beep engine: Input should be greater than or equal to 20"),
    ("pitch_hz=9000", "error: pitch_hz=9000 is too high for a 16000 Hz voice (below 8000)"),
])
def test_bad_voice_options_are_one_line_errors(site, beep_file, tmp_path, option, expected):
    out = tmp_path / "x.wav"
    result = cli(site, "run", "--device", "npu", "--model", str(beep_file), "-O", option, "Hello.", "-o", str(out),
                 **FAKE_NPU)
    assert one_line_error(result).startswith(expected)
    assert not out.exists()


def test_device_npu_without_an_npu_is_a_vetoed_plan(site, beep_file, tmp_path):
    # npu is a registered family, so the lock is valid (not an unknown-family usage error); there is
    # simply no NPU here: every proposal is vetoed and the run refuses in one line.
    plan = cli(site, "plan", "--device", "npu", "--model", str(beep_file), "--json")
    assert plan.returncode == 3
    data = Plan.model_validate_json(plan.stdout)
    why = ("all 1 proposals for voice were vetoed (device locked to npu); no npu device was found: plugin npu looked "
           "for one; it says: no NPU found (this demo plugin fakes one when DEMO_NPU_FAKE=1)")
    assert data.chosen is None and data.summary == why
    assert any("no NPU found (this demo plugin fakes one when DEMO_NPU_FAKE=1)" in n for n in data.hardware.notes)
    run = cli(site, "run", "--device", "npu", "--model", str(beep_file), "Hello.", "-o", str(tmp_path / "x.wav"))
    assert one_line_error(run) == f"error: {why}"
    # A family nobody registered is a usage error that lists the families, npu among them.
    unknown = one_line_error(cli(site, "plan", "--device", "tpu", "--model", str(beep_file)))
    assert unknown.startswith("error: unknown device 'tpu' from --device") and "npu" in unknown


def test_a_corrupt_beep_file_is_a_one_line_model_error(site, tmp_path):
    bad = tmp_path / "bad.beep"
    bad.write_text('{"format": "beep", "pitch_hz": "high"')
    assert one_line_error(cli(site, "plan", "--model", str(bad))).startswith(f"error: {bad} is not a valid beep file")
    wrong = tmp_path / "wrong.beep"
    wrong.write_text('{"format": "boop"}')
    assert one_line_error(cli(site, "plan", "--model", str(wrong))) == (
        f"error: {wrong} is not a valid beep file: Input should be 'beep'")


def test_the_beep_default_model_never_beats_the_embedded_voice(site, tmp_path):
    plan = Plan.model_validate_json(cli(site, "plan", "--json").stdout)
    assert (plan.model.family, plan.model.resolved_by) == ("piper", "cpu_onnx")
    # Without the Piper plugin the beep plugin's fallback answers, and `voxfit run` works with no model.
    out = tmp_path / "fallback.wav"
    result = cli(site, "-p", "no:cpu_onnx", "run", "one two three", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["plan"]["model"]["name"] == "beep-440" and report["chosen"].startswith("beep: beep, cpu")
    hz, seconds = dominant_hz(out)
    assert hz == pytest.approx(440, abs=10) and seconds == pytest.approx(3 * 0.15, abs=0.02)


def test_strict_mode_refuses_to_run_with_the_broken_plugin(site):
    err = one_line_error(cli(site, "--strict", "plugins"))
    assert err.startswith("error: plugin 'broken' broken")


def test_the_examples_pass_the_conformance_kit_as_installed(site, beep_file):
    # What a plugin author's own test suite does: the whole test is one call.
    code = f"""
import voxfit_beep, voxfit_npu
from voxfit.testing.conformance import assert_conformant
assert_conformant(voxfit_beep, model={str(beep_file)!r})
assert_conformant(voxfit_npu, model={str(beep_file)!r})
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(site), **FAKE_NPU}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# -- the guide shows the examples' real code ---------------------------------------------------


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


GUIDE = REPO / "docs" / "writing-a-plugin.md"
EXAMPLE_SOURCES = {
    "voxfit-beep": EXAMPLES / "voxfit-beep" / "src" / "voxfit_beep" / "__init__.py",
    "voxfit-npu": EXAMPLES / "voxfit-npu" / "src" / "voxfit_npu" / "__init__.py",
}


def _labelled_blocks() -> list[tuple[str, str]]:
    """Blocks of the guide that start with ``# docs/examples/...py``: (the file, the code below the label)."""
    out = []
    for block in _python_blocks(GUIDE.read_text()):
        first, _, rest = block.partition("\n")
        if first.startswith("# docs/examples/") and first.endswith(".py"):
            out.append((first[2:], rest))
    return out


def test_every_labelled_block_of_the_guide_is_the_examples_real_code():
    blocks = _labelled_blocks()
    assert len(blocks) >= 6
    for path, code in blocks:
        source = (REPO / path).read_text()
        for piece in code.strip().split("\n\n\n"):
            if _imports(piece) is not None:  # a block's own imports, so that it runs as printed
                file_imports = {(getattr(node, "module", None), alias.name) for node in ast.parse(source).body
                                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
                assert _imports(piece) <= file_imports, f"the guide's {path} block imports what the file does not"
                continue
            assert piece.strip() in source, f"the guide's {path} block drifted from the file:\n{piece}"


def _imports(code: str) -> Optional[set[tuple[Optional[str], str]]]:
    """(module, name) of every import in ``code`` when it holds nothing but imports, else None."""
    tree = ast.parse(code)
    if not tree.body or not all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body):
        return None
    return {(getattr(node, "module", None), alias.name) for node in tree.body for alias in node.names}


def test_every_labelled_block_of_the_guide_carries_its_imports():
    for path, code in _labelled_blocks():
        first = code.strip().split("\n\n\n")[0]
        assert _imports(first) is not None, f"a {path} block of the guide starts without its imports:\n{code[:200]}"


@pytest.mark.parametrize(("example", "hook"), [
    ("voxfit-beep", "register_engines"), ("voxfit-beep", "resolve_model"), ("voxfit-beep", "default_model"),
    ("voxfit-beep", "score_config"), ("voxfit-beep", "load_engine"),
    ("voxfit-npu", "register_device_families"), ("voxfit-npu", "detect"), ("voxfit-npu", "score_config"),
    ("voxfit-npu", "prepare_env"), ("voxfit-npu", "load_engine"),
])
def test_the_walkthrough_shows_each_hook_of_the_examples(example, hook):
    # The guide must not drift from the examples the tests install.
    path = str(EXAMPLE_SOURCES[example].relative_to(REPO))
    shown = [code for p, code in _labelled_blocks() if p == path and f"\ndef {hook}(" in f"\n{code}"]
    assert shown, f"the guide shows no {hook} of {example}"


def test_the_guides_hook_table_names_every_hook_with_its_arguments_and_return():
    import inspect

    from voxfit import hookspecs
    from voxfit.plugins import HOOK_NAMES

    rows = {line.split("|")[1].strip().strip("`"): line for line in GUIDE.read_text().splitlines()
            if line.startswith("| `")}
    assert set(HOOK_NAMES) <= set(rows)
    for hook in HOOK_NAMES:
        sig = inspect.signature(getattr(hookspecs, hook))
        args = ", ".join(f"`{name}: {p.annotation}`" for name, p in sig.parameters.items())
        assert f"| {args} | `{sig.return_annotation}` |" in rows[hook], f"the guide's row for {hook} drifted"
