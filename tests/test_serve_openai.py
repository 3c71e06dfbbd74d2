"""The official `openai` client, unchanged, against a real `voxfit serve` process on a free loopback port."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from serve_helpers import ServerProcess, clean_env, decode

pytestmark = pytest.mark.timeout(180)

TEXT = "The quick brown fox jumps over the lazy dog. Then it rests."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve-openai")
    proc = ServerProcess(["--port", "0", "--max-queue", "0"],
                         env=clean_env(VOXFIT_CACHE_DIR=str(work / "cache"), VOXFIT_API_KEY="sk-local-test",
                                       VOXFIT_VOICE_ALIASES="alloy=en_US-joe-medium"), cwd=work)
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-local-test", max_retries=0, timeout=60)


@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac", "mp3", "opus", "aac"])
def test_create_returns_speech_in_every_format(client, fmt):
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)
    samples, rate = decode(response.content, fmt)
    assert 2.0 < len(samples) / rate < 8.0 and abs(samples).max() > 1000  # speech, not silence


def test_with_streaming_response_streams_the_audio(client, tmp_path):
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=TEXT,
                                                            response_format="mp3") as response:
        assert response.headers["content-type"] == "audio/mpeg"
        response.stream_to_file(tmp_path / "speech.mp3")
    samples, rate = decode((tmp_path / "speech.mp3").read_bytes(), "mp3")
    assert rate == 22050 and len(samples) / rate > 2.0


def test_sse_events_through_the_client(client):
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="alloy", input=TEXT,
                                                            response_format="pcm", stream_format="sse") as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and events[0]["type"] == "speech.audio.delta"


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "en_US-joe-medium" and "tts-1" in ids
    assert client.models.retrieve("tts-1").id == "tts-1"
    with pytest.raises(openai.NotFoundError, match="no model 'whisper-1'"):
        client.models.retrieve("whisper-1")


def test_errors_arrive_as_the_clients_exceptions(client, server):
    with pytest.raises(openai.BadRequestError, match="unknown voice 'marin'"):
        client.audio.speech.create(model="tts-1", voice="marin", input=TEXT)
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)


def test_the_api_key_guards_every_route_but_health(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    for path in ("/ready", "/v1/models", "/metrics", "/v1/plan", "/v1/system", "/v1/audio/voices"):
        assert httpx.get(f"{server.url}{path}").status_code == 401, path
        assert httpx.get(f"{server.url}{path}", headers={"Authorization": "Bearer sk-local-test-"}).status_code == 401
        assert httpx.get(f"{server.url}{path}", headers={"Authorization": "Bearer sk-local-test"}).status_code == 200


def test_overload_reaches_the_client_as_503_with_retry_after_at_once(client, server):
    headers = {"Authorization": "Bearer sk-local-test"}
    entry = httpx.get(f"{server.url}/v1/audio/voices", headers=headers).json()["voices"][0]
    slots = entry["engines"] * entry["requests_per_engine"]  # requests running at once; --max-queue 0 waits none
    long_text = " ".join(f"Sentence {i} keeps the workers busy for a while." for i in range(12))
    busy = [threading.Thread(target=lambda: client.audio.speech.create(model="tts-1", voice="alloy", input=long_text,
                                                                       response_format="pcm")) for _ in range(slots)]
    for t in busy:
        t.start()
    deadline = time.monotonic() + 20
    while f'voxfit_in_flight{{voice="en_US-joe-medium"}} {slots:.1f}' not in httpx.get(f"{server.url}/metrics",
                                                                                   headers=headers).text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.perf_counter()
    with pytest.raises(openai.InternalServerError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    assert time.perf_counter() - t0 < 1.0
    assert refused.value.status_code == 503 and int(refused.value.response.headers["retry-after"]) >= 1
    for t in busy:
        t.join(60)


OPENAI_VOICES = ["alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"]


def test_open_webui_reads_every_voice_and_openais_names_speak(client, server):
    headers = {"Authorization": "Bearer sk-local-test"}
    data = httpx.get(f"{server.url}/v1/audio/voices", headers=headers).json()
    picker = {voice["id"]: voice["name"] for voice in data["voices"]}  # Open WebUI's own line
    assert picker["en_US-joe-medium"] == "en_US-joe-medium"
    assert set(OPENAI_VOICES) <= set(picker) and picker["nova"] == "nova (en_US-joe-medium)"
    aliases = {v["id"]: v for v in data["voices"] if "alias_of" in v}
    assert {v["alias_of"] for v in aliases.values()} == {"en_US-joe-medium"}
    assert aliases["alloy"]["sample_rate"] == 22050  # every field of the voice it speaks as
    for name in OPENAI_VOICES:
        pcm = client.audio.speech.create(model="tts-1", voice=name, input="Hi.", response_format="pcm").content
        assert len(pcm) > 24_000 * 2 * 0.1, name  # at least a tenth of a second of 24 kHz 16-bit audio
    with pytest.raises(openai.BadRequestError) as unknown:
        client.audio.speech.create(model="tts-1", voice="alloys", input="Hi.")
    assert "unknown voice 'alloys'" in unknown.value.message and "nova" not in unknown.value.message


def test_with_a_key_the_plan_shows_where_the_model_lives(server):
    plan = httpx.get(f"{server.url}/v1/plan", headers={"Authorization": "Bearer sk-local-test"}).json()
    import re

    assert re.search(r'"/[^"\s]*/[^"]*\.onnx"', json.dumps(plan)), "no model path in the plan"
