"""A Fish Speech voice through a real `voxfit serve` process: the planned batch, requests decoded together,
audio streamed before the sentence ends; read with the official `openai` client and httpx."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from serve_helpers import ServerProcess, clean_env

pytestmark = pytest.mark.timeout(240)

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def server(fish_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve-fish")
    proc = ServerProcess(["--port", "0", "--model", str(fish_checkpoint), "--max-queue", "2"],
                         env=clean_env(VOXFIT_CACHE_DIR=str(work / "cache"), VOXFIT_MAX_BATCH="3",
                                       VOXFIT_METRICS_LOG=str(work / "requests.jsonl")), cwd=work, timeout=180)
    proc.metrics_log = work / "requests.jsonl"
    yield proc
    assert proc.stop() == 0


def test_the_batch_is_planned_shown_and_used_for_admission(server):
    plans = httpx.get(f"{server.url}/v1/plan", timeout=30).json()["voices"]
    chosen = next(iter(plans.values()))["chosen"]
    assert chosen["batch_size"] == 3
    assert any(r.startswith("batch 3: up to 3 requests decode together") for r in chosen["reasons"])
    voice = httpx.get(f"{server.url}/v1/audio/voices", timeout=30).json()["voices"][0]
    assert voice["requests_per_engine"] == 3


def test_requests_at_once_decode_together_and_all_finish(server):
    statuses: list[int] = []

    def one() -> None:
        r = httpx.post(f"{server.url}/v1/tts", json={"text": SENTENCE, "format": "pcm"}, timeout=120)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200, 200]
    lines = [json.loads(line) for line in server.metrics_log.read_text().splitlines() if line.strip()]
    batches = [line["batch"] for line in lines if line.get("batch")]
    assert batches and max(batches) >= 2  # at least two were in one batch


def test_a_streamed_sentence_arrives_in_windows_before_it_ends(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="tiny-s1", input=SENTENCE,
                                                            response_format="pcm", stream_format="sse") as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert events[-1]["type"] == "speech.audio.done"
    assert len(deltas) >= 2  # one sentence, several pieces: the first came before the sentence was generated
