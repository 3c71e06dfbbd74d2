"""Settings: TTSFW_ variables, .env, flags on top, and one-line errors for bad values."""


import pytest
from ttsfw.errors import UsageError
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
def test_unknown_device_is_a_one_line_error_naming_its_source(monkeypatch, source):
    if source == "env":
        monkeypatch.setenv("TTSFW_DEVICE", "gpu")
        expected = "unknown device 'gpu' from TTSFW_DEVICE: choose one of auto, cpu, cuda, mps"
        call = {}
    else:
        expected = "unknown device 'gpu' from --device: choose one of auto, cpu, cuda, mps"
        call = {"device": "gpu"}
    with pytest.raises(UsageError) as info:
        load_settings(**call)
    assert str(info.value) == expected


def test_other_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("TTSFW_MEMORY_HEADROOM", "2")
    with pytest.raises(UsageError, match="TTSFW_MEMORY_HEADROOM"):
        load_settings()
