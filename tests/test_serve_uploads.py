"""Reference audio arrives as an upload, never as a path; limits on its size and length; the file does not outlive the request."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile
from serve_helpers import InProcessServer, toy_voice

pytestmark = pytest.mark.timeout(60)


def clip(seconds: float, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    tone = (np.sin(np.arange(int(seconds * rate)) * 0.05) * 3000).astype("int16")
    soundfile.write(out, tone, rate, format="FLAC")
    return out.getvalue()


@pytest.fixture
def server():
    voice, engines = toy_voice("clone")
    with InProcessServer([voice], max_upload_bytes=200_000, max_reference_seconds=5.0) as srv:
        srv.engines = engines
        yield srv


def test_an_uploaded_clip_reaches_the_engine_as_a_private_file_that_is_removed_afterwards(server):
    data = clip(2.0)
    r = httpx.post(f"{server.url}/v1/tts", data={"text": "Say it like me.", "reference_text": "what it says"},
                   files={"reference_audio": ("../../etc/evil name.wav", data, "audio/flac")}, timeout=30)
    assert r.status_code == 200, r.text
    path, seen, transcript, mode = server.engines[0].references[-1]
    assert seen == data and transcript == "what it says"
    assert path.name == "reference.flac" and "evil" not in str(path)  # the client's file name is never used
    assert mode & 0o777 == 0o700  # a private directory
    assert not path.exists() and not path.parent.exists()  # removed when the request ended


@pytest.mark.parametrize("files, data, status, fragment", [
    ({"reference_audio": ("a.flac", b"x" * 300_000, "audio/flac")}, {"text": "Hi."}, 413, "VOXFIT_MAX_UPLOAD_BYTES"),
    ({"reference_audio": ("a.flac", clip(8.0, 4000), "audio/flac")}, {"text": "Hi."}, 400, "8.0 s long; at most 5 s"),
    ({"reference_audio": ("a.wav", b"RIFF but not audio", "audio/wav")}, {"text": "Hi."}, 400, "not audio"),
    ({"other": ("a.wav", b"x", "audio/wav")}, {"text": "Hi."}, 400, "voice clone takes no file 'other' (it takes: reference_audio)"),
    (None, {"text": "Hi.", "reference_text": "no clip"}, 400, "reference_text needs reference_audio"),
])
def test_bad_uploads_are_one_line_4xx(server, files, data, status, fragment):
    r = httpx.post(f"{server.url}/v1/tts", data=data, files=files, timeout=30)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert fragment in message and "\n" not in message
    assert server.engines[0].references == []


def test_a_path_in_json_is_refused_and_nothing_is_opened(server, tmp_path):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(clip(1.0))
    for body in ({"text": "Hi.", "options": {"reference_audio": str(secret)}},):
        r = httpx.post(f"{server.url}/v1/tts", json=body, timeout=30)
        assert r.status_code == 400 and "never opens a path a client names" in r.json()["error"]["message"]
    assert server.engines[0].references == []
