"""Every `voxfit serve` option is also a VOXFIT_* setting; a wrong value is one line naming where it came from."""

from __future__ import annotations

import pytest
from voxfit.errors import UsageError
from voxfit.settings import load_settings


def test_serve_settings_come_from_the_environment(monkeypatch):
    for key, value in {
        "VOXFIT_MODELS": "a.onnx, b.onnx", "VOXFIT_HOST": "::1", "VOXFIT_PORT": "0", "VOXFIT_WORKERS_PER_ENGINE": "2",
        "VOXFIT_MAX_QUEUE": "3", "VOXFIT_REQUEST_TIMEOUT": "9.5", "VOXFIT_DRAIN_TIMEOUT": "4", "VOXFIT_API_KEY": "k",
        "VOXFIT_METRICS_LOG": "/tmp/x.jsonl", "VOXFIT_MAX_INPUT_CHARS": "100", "VOXFIT_MAX_UPLOAD_BYTES": "2048",
        "VOXFIT_MAX_REFERENCE_SECONDS": "12", "VOXFIT_VOICE_ALIASES": "alloy=a, echo=b",
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
    ("VOXFIT_MAX_QUEUE", "-1", "invalid value '-1' from VOXFIT_MAX_QUEUE"),
    ("VOXFIT_PORT", "70000", "invalid value '70000' from VOXFIT_PORT"),
    ("VOXFIT_VOICE_ALIASES", "alloy", "a voice alias is ALIAS=VOICE"),
    ("VOXFIT_REQUEST_TIMEOUT", "0", "from VOXFIT_REQUEST_TIMEOUT"),
])
def test_bad_serve_settings_are_one_line(monkeypatch, variable, value, fragment):
    monkeypatch.setenv(variable, value)
    with pytest.raises(UsageError, match=fragment) as err:
        load_settings()
    assert "\n" not in str(err.value)
