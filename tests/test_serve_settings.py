"""Every `ttsfw serve` option is also a TTSFW_* setting; a wrong value is one line naming where it came from."""

from __future__ import annotations

import pytest
from ttsfw.errors import UsageError
from ttsfw.settings import load_settings


def test_serve_settings_come_from_the_environment(monkeypatch):
    for key, value in {
        "TTSFW_MODELS": "a.onnx, b.onnx", "TTSFW_HOST": "::1", "TTSFW_PORT": "0", "TTSFW_WORKERS_PER_ENGINE": "2",
        "TTSFW_MAX_QUEUE": "3", "TTSFW_REQUEST_TIMEOUT": "9.5", "TTSFW_DRAIN_TIMEOUT": "4", "TTSFW_API_KEY": "k",
        "TTSFW_METRICS_LOG": "/tmp/x.jsonl", "TTSFW_MAX_INPUT_CHARS": "100", "TTSFW_MAX_UPLOAD_BYTES": "2048",
        "TTSFW_MAX_REFERENCE_SECONDS": "12", "TTSFW_VOICE_ALIASES": "alloy=a, echo=b",
    }.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.models == ["a.onnx", "b.onnx"] and s.host == "::1" and s.port == 0 and s.workers_per_engine == 2
    assert (s.max_queue, s.request_timeout, s.drain_timeout, s.api_key) == (3, 9.5, 4.0, "k")
    assert str(s.metrics_log) == "/tmp/x.jsonl" and s.max_input_chars == 100 and s.max_upload_bytes == 2048
    assert s.max_reference_seconds == 12 and s.voice_aliases == {"alloy": "a", "echo": "b"}
    assert load_settings(port=9, voice_aliases=["x=y"]).port == 9  # a flag wins over the environment


def test_serve_defaults_are_loopback_and_bounded():
    s = load_settings()
    assert (s.host, s.port, s.workers_per_engine, s.max_queue, s.max_input_chars) == ("127.0.0.1", 8000, 1, 8, 4096)
    assert s.api_key is None and s.request_timeout == 120


@pytest.mark.parametrize("variable, value, fragment", [
    ("TTSFW_MAX_QUEUE", "-1", "invalid value '-1' from TTSFW_MAX_QUEUE"),
    ("TTSFW_PORT", "70000", "invalid value '70000' from TTSFW_PORT"),
    ("TTSFW_VOICE_ALIASES", "alloy", "a voice alias is ALIAS=VOICE"),
    ("TTSFW_REQUEST_TIMEOUT", "0", "from TTSFW_REQUEST_TIMEOUT"),
])
def test_bad_serve_settings_are_one_line(monkeypatch, variable, value, fragment):
    monkeypatch.setenv(variable, value)
    with pytest.raises(UsageError, match=fragment) as err:
        load_settings()
    assert "\n" not in str(err.value)
