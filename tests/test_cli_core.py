"""The CLI as a user runs it: subprocesses of the installed `voxfit` command."""

import json

import pytest
from helpers import embedded_voice, voxfit_cli
from voxfit import __version__
from voxfit.models import HardwareProfile, Plan

FOUR = {"cpu_onnx", "cuda", "mps", "wsl"}


def one_line_error(result, exit_code=None):
    err = result.stderr.decode()
    assert result.returncode != 0
    if exit_code is not None:
        assert result.returncode == exit_code
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


def test_version():
    result = voxfit_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout.decode()


def test_plugins_json_lists_the_four_plugins_with_their_hooks():
    result = voxfit_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    assert FOUR <= set(infos)
    for name in FOUR:
        assert infos[name]["status"] == "ok", infos[name]
        assert "detect" in infos[name]["hooks"]
        assert infos[name]["distribution"] == "voxfit-" + name.replace("_", "-")
    human = voxfit_cli("plugins").stdout.decode()
    assert "cpu_onnx" in human and "STATUS" in human


def test_block_and_allow_plugins_from_flags_and_environment():
    blocked = {i["name"]: i["status"] for i in json.loads(voxfit_cli("-p", "no:cuda", "plugins", "--json").stdout)}
    assert blocked["cuda"] == "blocked" and blocked["cpu_onnx"] == "ok"
    env = {"VOXFIT_ALLOW_PLUGINS": "cpu_onnx"}
    allowed = {i["name"]: i["status"] for i in json.loads(voxfit_cli("plugins", "--json", env=env).stdout)}
    assert allowed["cpu_onnx"] == "ok" and {allowed[n] for n in FOUR - {"cpu_onnx"}} == {"blocked"}


def test_detect_describes_this_cpu_and_nothing_else_here():
    result = voxfit_cli("detect", "--json")
    assert result.returncode == 0, result.stderr
    profile = HardwareProfile.model_validate_json(result.stdout)
    assert profile.cores_logical >= 1 and profile.memory_total_bytes > 0
    # No GPU, no Mac, no WSL on this machine: only the CPU, reported by cpu_onnx.
    assert [(d.id, d.detected_by) for d in profile.devices] == [("cpu", "cpu_onnx")]
    assert "wsl" not in profile.flags


def test_detect_output_is_what_plan_accepts(tmp_path):
    profile_file = tmp_path / "hw.json"
    profile_file.write_bytes(voxfit_cli("detect", "--json").stdout)
    result = voxfit_cli("plan", "--hardware", str(profile_file), "--model", str(embedded_voice()), "--json")
    assert result.returncode in (0, 3), result.stderr
    plan = Plan.model_validate_json(result.stdout)
    assert plan.hardware.source == str(profile_file)
    assert plan.hardware.devices[0].id == "cpu"
    assert plan.model.name == "en_US-joe-medium" and plan.model.sample_rate == 22050


def test_plan_human_output_has_every_section(tmp_path):
    out = voxfit_cli("plan", "--model", str(embedded_voice())).stdout.decode()
    for heading in ("Model:", "Hardware:", "Device:", "Chosen:", "Summary:"):
        assert heading in out


@pytest.mark.parametrize(
    "args,env,message",
    [
        (["plan", "--device", "tpu"], {}, "unknown device 'tpu' from --device: choose auto or a device family"),
        (["plan"], {"VOXFIT_DEVICE": "gpu"}, "unknown device 'gpu' from VOXFIT_DEVICE: choose auto or a device family"),
        (["plan", "--device", "GPU!"], {}, "unknown device 'GPU!' from --device: name a device family"),
        (["plan", "--hardware", "missing.json"], {}, "hardware profile not found"),
        (["plan", "--hardware", "garbage.json"], {}, "hardware profile garbage.json is not valid UTF-8"),
        (["plan", "--hardware", "wrong.json"], {}, "is invalid at"),
        (["plan", "--model", "nowhere.onnx"], {}, "model not found"),
        (["plan", "--model", "bad.onnx"], {}, "voice config missing"),
        (["-p", "cuda", "plugins"], {}, "-p expects no:NAME"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(tmp_path, args, env, message):
    (tmp_path / "garbage.json").write_bytes(b"\xff\xfe not json")
    (tmp_path / "wrong.json").write_text(json.dumps({"os": "linux", "devices": "many"}))
    (tmp_path / "bad.onnx").write_bytes(b"\x00" * 2048)
    result = voxfit_cli(*args, env=env, cwd=tmp_path)
    assert message in one_line_error(result)
