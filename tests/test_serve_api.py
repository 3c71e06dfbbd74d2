"""`voxfit serve` with the embedded Piper voice, as a real process on a free loopback port: every route."""

from __future__ import annotations

import base64
import json
import time
import wave

import httpx
import pytest
from serve_helpers import ServerProcess, clean_env, decode

pytestmark = pytest.mark.timeout(180)

TEXT = "Hello there. This is voxfit speaking from a server."
FORMATS = ("wav", "pcm", "flac", "mp3", "opus", "aac")
# Decoded length may differ from the synthesized one by the codec's framing: MP3 adds an encoder
# delay and pads the last frame; the resampler to 24 kHz (pcm, opus) keeps the duration.
TOLERANCE = {"wav": 0.001, "pcm": 0.005, "flac": 0.001, "mp3": 0.12, "opus": 0.03, "aac": 0.12}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    proc = ServerProcess(["--port", "0", "--metrics-log", str(work / "requests.jsonl")],
                         env=clean_env(VOXFIT_CACHE_DIR=str(work / "cache")), cwd=work)
    proc.work = work
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def voice(client):
    return client.get("/v1/audio/voices").json()["default"]


def logged(server, request_id: str) -> dict:
    """The request log's line for one request (written as its response ends)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in (server.work / "requests.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["id"] == request_id:
                return record
        time.sleep(0.05)
    raise AssertionError(f"{request_id} not in the request log")


def test_a_whole_wav_has_its_real_length_and_metrics_headers(client, voice):
    r = client.post("/v1/tts", json={"text": TEXT, "voice": voice, "format": "wav"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    samples, rate = decode(r.content, "wav")
    assert len(samples) / rate == pytest.approx(float(r.headers["X-Voxfit-Audio-Seconds"]), abs=1e-3)
    assert float(r.headers["X-Voxfit-Rtf"]) > 0 and float(r.headers["X-Voxfit-Time-To-First-Audio"]) > 0


def test_the_server_prints_the_plan_and_its_address(server):
    out = "\n".join(server.stdout)
    assert "Chosen:" in out and "Summary:" in out
    assert server.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise


def test_service_routes(client, voice):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["voices"][voice]["ready"] is True
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == voice
    assert {"tts-1", "tts-1-hd"} <= {m["id"] for m in models["data"]}
    voices = client.get("/v1/audio/voices").json()
    entry = voices["voices"][0]
    assert entry["sample_rate"] == 22050 and entry["plan_summary"]
    assert entry["id"] == entry["name"] == voice  # what Open WebUI reads
    documented = {o["name"]: o for o in entry["options"]}  # from the engine's options model, not named here
    assert documented["length_scale"]["type"] == "number" and documented["length_scale"]["description"]
    assert entry["speed"]["option"] == "length_scale"
    assert set(voices["formats"]) == set(FORMATS)
    plan = client.get("/v1/plan").json()["voices"][voice]
    assert plan["chosen"]["engine"] == "piper-onnx" and plan["model"]["name"] == voice
    system = client.get("/v1/system").json()
    assert 0 <= system["cpu"]["percent"] <= 100 and system["memory"]["total_bytes"] > 0
    assert any(d["id"] == "cpu" for d in system["devices"])


def test_estimate_grows_with_the_text(client, voice):
    short = client.post("/v1/estimate", json={"text": "Hi there.", "voice": voice}).json()
    long = client.post("/v1/estimate", json={"text": "Hi there. " * 40}).json()
    assert long["audio_seconds"] > 10 * short["audio_seconds"] > 0
    assert long["sentences"] == 40 and long["peak_memory_bytes"] > 0 and long["basis"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_streamed_by_the_openai_route_decodes_to_the_right_duration(server, client, voice, fmt):
    r = client.post("/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": voice,
                                              "response_format": fmt})
    assert r.status_code == 200, r.text
    samples, rate = decode(r.content, fmt)
    assert rate in ((24000,) if fmt in ("pcm", "opus") else (22050,))
    made = logged(server, r.headers["X-Request-Id"])["audio_seconds"]  # what the engine produced for it
    assert len(samples) / rate == pytest.approx(made, abs=TOLERANCE[fmt])


@pytest.mark.parametrize("fmt", ("mp3", "opus", "flac"))
def test_the_native_route_returns_whole_files_with_metrics(client, voice, fmt):
    r = client.post("/v1/tts", json={"text": TEXT, "voice": voice, "format": fmt, "length_scale": 1.0, "seed": None})
    assert r.status_code == 200, r.text
    samples, rate = decode(r.content, fmt)
    assert len(samples) / rate == pytest.approx(float(r.headers["X-Voxfit-Audio-Seconds"]), abs=TOLERANCE[fmt])
    assert float(r.headers["X-Voxfit-Rtf"]) > 0 and r.headers["X-Request-Id"].startswith("req-")


def test_a_streamed_wav_starts_before_the_text_is_done(client, voice):
    text = " ".join(f"This is sentence number {i}, spoken on its own." for i in range(8))
    with client.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": voice,
                                                         "response_format": "wav"}) as r:
        pieces = list(r.iter_raw())
    assert pieces[0][:4] == b"RIFF" and len(pieces) >= 4  # a header and audio sentence by sentence
    with wave.open(__import__("io").BytesIO(b"".join(pieces))) as w:  # a player reads the unknown-length header
        assert w.getframerate() == 22050 and w.getnchannels() == 1


def test_sse_sends_audio_deltas_then_done_with_usage(client, voice):
    with client.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "input": TEXT, "voice": voice,
                                                         "response_format": "pcm", "stream_format": "sse"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 3
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == len(TEXT)
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    made = events[-1]["voxfit"]["audio_seconds"]
    assert len(pcm) / 2 / 24000 == pytest.approx(made, abs=TOLERANCE["pcm"])


@pytest.mark.parametrize("body, status, fragment", [
    (b"", 400, "the body is empty"),
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"model": "tts-1", "voice": "VOICE"}', 400, "input is required"),
    (b'{"model": "tts-1", "input": "Hi.", "voice": "VOICE", "pitch": 3}', 400, "unknown parameter 'pitch'"),
    (b'{"model": "tts-1", "input": "Hi.", "voice": "nobody"}', 400, "unknown voice 'nobody': this server offers"),
    (b'{"model": "tts-1", "input": "Hi.", "voice": "VOICE", "speed": 9}', 400, "speed: Input should be less"),
    (b'{"model": "gpt-9", "input": "Hi.", "voice": "VOICE"}', 400, "unknown model 'gpt-9'"),
    (b'{"model": "tts-1", "input": "   ", "voice": "VOICE"}', 400, "input is empty"),
    (b'{"model": "tts-1", "input": "?!", "voice": "VOICE"}', 400, "nothing speakable"),
    (b'{"model": "tts-1", "input": "' + b"a" * 5000 + b'", "voice": "VOICE"}', 400, "at most 4096"),
])
def test_bad_bodies_are_one_line_4xx_in_openais_shape(client, voice, body, status, fragment):
    r = client.post("/v1/audio/speech", content=body.replace(b"VOICE", voice.encode()),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert fragment in error["message"] and "\n" not in error["message"] and "Traceback" not in r.text
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


def test_native_route_options_are_checked_against_the_engine_and_no_path_is_opened(client, voice):
    bad = client.post("/v1/tts", json={"text": "Hi.", "options": {"pitch": 2}})
    assert bad.status_code == 400 and "option 'pitch' does not apply to voice" in bad.json()["error"]["message"]
    value = client.post("/v1/tts", json={"text": "Hi.", "length_scale": -1})
    assert value.status_code == 400 and "length_scale=-1" in value.json()["error"]["message"]
    path = client.post("/v1/tts", json={"text": "Hi.", "options": {"reference_audio": "/etc/passwd"}})
    assert path.status_code == 400
    upload = client.post("/v1/tts", data={"text": "Hi."}, files={"reference_audio": ("a.wav", b"RIFF....", "audio/wav")})
    assert upload.status_code == 400 and "takes no file 'reference_audio' (it takes: none)" in upload.json()["error"]["message"]
    assert client.get("/nowhere").json()["error"]["message"] == "no route GET /nowhere"
    assert client.get("/v1/audio/speech").status_code == 405


def test_metrics_and_the_request_log(server, client, voice):
    client.post("/v1/tts", json={"text": "Counted.", "voice": voice})
    text = client.get("/metrics").text
    for name in ("voxfit_http_requests_total", "voxfit_queue_depth", "voxfit_in_flight", "voxfit_request_seconds_bucket",
                 "voxfit_time_to_first_audio_seconds_bucket", "voxfit_rtf_bucket", "voxfit_audio_seconds_total"):
        assert name in text, name
    assert 'voxfit_http_requests_total{route="/v1/tts",status="200"}' in text
    records = [json.loads(line) for line in (server.work / "requests.jsonl").read_text().splitlines()]
    last = [r for r in records if r["characters"] == len("Counted.")][-1]
    assert last["status"] == "ok" and last["audio_seconds"] > 0 and last["rtf"] > 0
    assert last["time_to_first_audio_seconds"] <= last["total_seconds"] and last["peak_rss_bytes"] > 0
    assert {"id", "voice", "queue_wait_seconds", "gpu_util_percent"} <= set(last)


def test_a_client_that_leaves_a_stream_cancels_it_and_the_engine_is_free_again(server, client, voice):
    text = " ".join(f"This is sentence number {i}, and nobody will hear it." for i in range(30))
    with client.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": voice,
                                                         "response_format": "pcm"}) as r:
        first = next(r.iter_raw())
        request_id = r.headers["X-Request-Id"]
    assert first
    left = time.monotonic()
    record = logged(server, request_id)  # written when the server noticed and stopped it
    while 'voxfit_in_flight{voice="en_US-joe-medium"} 0.0' not in client.get("/metrics").text:
        assert time.monotonic() - left < 3.0, "the engine stayed busy after its client left"
        time.sleep(0.05)
    assert record["status"] == "cancelled" and record["audio_seconds"] < 30  # far from the ~150 s asked for
    assert "cancelled" in server.log() and request_id in server.log()


def test_without_a_key_clients_read_names_not_paths_nor_the_host(server, client, voice):
    import re
    import socket

    shown = json.dumps([client.get(path).json() for path in
                        ("/v1/plan", "/v1/system", "/v1/audio/voices", f"/v1/audio/voices/{voice}")])
    assert str(server.work) not in shown and str(server.work.parent) not in shown
    assert not re.search(r'"/[^"\s]*/', shown), re.search(r'"/[^"\s]*/.{0,80}', shown)
    assert not re.search(rf"(?<![\w.-]){re.escape(socket.gethostname())}(?![\w-])", shown)
    plan = client.get("/v1/plan").json()["voices"][voice]
    assert plan["model"]["name"] == voice and plan["chosen"]["engine"] == "piper-onnx"
    assert re.search(r'"[^"/]*\.onnx"', shown), "the model's file name is still shown"
