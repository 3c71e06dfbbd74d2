"""Settings: TTSFW_ variables, .env, flags on top, and one-line errors for bad values."""


import pytest
from helpers import cpu_profile
from ttsfw.errors import UsageError
from ttsfw.planner import make_plan
from ttsfw.plugins import PluginHost
from ttsfw.settings import load_settings


def test_environment_and_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("TTSFW_DEVICE=cpu\nTTSFW_BLOCK_PLUGINS=cuda, mps\nTTSFW_STRICT=1\n")
    s = load_settings()
    assert (s.device, s.block_plugins, s.strict) == ("cpu", ["cuda", "mps"], True)
    monkeypatch.setenv("TTSFW_DEVICE", "mps")  # the environment beats .env
    assert load_settings().device == "mps"
    assert load_settings(device="cuda").device == "cuda"  # a flag beats both


def test_allow_list_and_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TTSFW_ALLOW_PLUGINS", "cpu_onnx")
    monkeypatch.setenv("TTSFW_CACHE_DIR", str(tmp_path / "c"))
    s = load_settings(model="voice.onnx")
    assert s.allow_plugins == ["cpu_onnx"] and s.cache_dir == tmp_path / "c" and s.model == "voice.onnx"


@pytest.mark.parametrize("source", ["flag", "env"])
def test_unknown_device_family_is_a_one_line_error_naming_its_source_and_the_families(monkeypatch, source):
    # Device families are what the installed plugins register: checked when the plan is made.
    if source == "env":
        monkeypatch.setenv("TTSFW_DEVICE", "gpu")
        call = {}
    else:
        call = {"device": "gpu"}
    host = PluginHost.from_entry_points(load_settings(**call))
    with pytest.raises(UsageError) as info:
        make_plan(host, hardware=cpu_profile())
    expected_source = "TTSFW_DEVICE" if source == "env" else "--device"
    assert str(info.value) == (
        f"unknown device family 'gpu' from {expected_source}: choose auto or one of cpu, cuda, mps"
        " (present on this machine: cpu)"
    )


@pytest.mark.parametrize("value", ["GPU!", "../cpu", "a" * 70])
def test_a_device_that_is_not_a_family_name_is_refused_at_once(value):
    with pytest.raises(UsageError, match="from --device: name a device family"):
        load_settings(device=value)


def test_other_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("TTSFW_MEMORY_HEADROOM", "2")
    with pytest.raises(UsageError, match="TTSFW_MEMORY_HEADROOM"):
        load_settings()
