"""`voxfit serve` under load and faults, on stand-in engines whose timing is known (real sockets, in-process)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from serve_helpers import InProcessServer, toy_voice

pytestmark = pytest.mark.timeout(120)

SENTENCES = " ".join(f"Sentence number {i} is here." for i in range(20))


def speech(client: httpx.Client, url: str, text: str, voice: str = "slow", fmt: str = "pcm", **extra) -> httpx.Response:
    return client.post(f"{url}/v1/audio/speech",
                       json={"model": "tts-1", "input": text, "voice": voice, "response_format": fmt, **extra})


def wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_full_queue_is_answered_at_once_with_503_and_retry_after():
    voice, engines = toy_voice("slow", delay=0.4)
    with InProcessServer([voice], max_queue=1) as srv, httpx.Client(timeout=30) as client:
        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: results.append(speech(client, srv.url, "One. Two. Three.")))
                   for _ in range(2)]
        for t in threads:  # one runs, one waits: the queue (limit 1) is full
            t.start()
        deadline = time.monotonic() + 10
        while srv.state.pools["slow"].busy + srv.state.pools["slow"].waiting < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.perf_counter()
        refused = speech(client, srv.url, "Three.")
        answered_in = time.perf_counter() - t0
        for t in threads:
            t.join(30)
        assert refused.status_code == 503 and answered_in < 0.3  # at once: nothing waits behind a full queue
        assert int(refused.headers["Retry-After"]) >= 1
        err = refused.json()["error"]
        assert err["code"] == "queue_full" and "VOXFIT_MAX_QUEUE=1" in err["message"] and "\n" not in err["message"]
        assert [r.status_code for r in results] == [200, 200]  # the admitted ones lose nothing
        assert all(len(r.content) == 3 * 0.5 * 24000 * 2 for r in results)  # 3 sentences, 24 kHz pcm
        text = client.get(f"{srv.url}/metrics").text
        assert metric(text, "voxfit_rejected_requests_total", voice="slow", reason="queue_full") == 1


def test_a_client_that_disconnects_cancels_at_the_next_sentence_and_frees_its_worker():
    voice, engines = toy_voice("slow", delay=0.25)
    with InProcessServer([voice], max_queue=0) as srv, httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{srv.url}/v1/audio/speech",
                           json={"model": "tts-1", "input": SENTENCES, "voice": "slow", "response_format": "wav"}) as r:
            assert r.status_code == 200
            first = next(r.iter_bytes())
            assert first[:4] == b"RIFF"
        left_at = time.perf_counter()
        # The worker is free again within a sentence or two (max_queue=0: a busy worker would refuse this).
        deadline = time.monotonic() + 5
        while srv.state.pools["slow"].busy:
            assert time.monotonic() < deadline, "the worker stayed busy after the client left"
            time.sleep(0.02)
        freed_in = time.perf_counter() - left_at
        after = speech(client, srv.url, "Short one.")
        assert after.status_code == 200
        assert freed_in < 1.5
        assert len(engines[0].spoken) <= 5 + 1  # far fewer than the 20 sentences asked for (+ the short one)
        assert any(" cancelled " in line for line in srv.lines), srv.lines
        text = client.get(f"{srv.url}/metrics").text
        assert metric(text, "voxfit_speech_requests_total", voice="slow", outcome="cancelled") == 1


def test_a_client_that_leaves_while_queued_is_taken_out_of_the_queue():
    voice, engines = toy_voice("slow", delay=0.3)
    with InProcessServer([voice], max_queue=1) as srv, httpx.Client(timeout=30) as client:
        busy = threading.Thread(target=lambda: speech(client, srv.url, "One. Two. Three. Four."))
        busy.start()
        wait_until(lambda: srv.state.pools["slow"].busy)
        with pytest.raises(httpx.ReadTimeout):  # waits in the queue, then gives up
            httpx.post(f"{srv.url}/v1/tts", json={"text": "Queued.", "voice": "slow"}, timeout=0.3)
        deadline = time.monotonic() + 5
        while srv.state.pools["slow"].waiting:
            assert time.monotonic() < deadline, "the departed client kept its place in the queue"
            time.sleep(0.02)
        busy.join(30)
        assert "Queued." not in engines[0].spoken


def test_the_deadline_counts_the_queue_and_a_timeout_is_504():
    voice, engines = toy_voice("slow", delay=0.3)
    with InProcessServer([voice], max_queue=2, request_timeout=1.0) as srv, httpx.Client(timeout=30) as client:
        long = threading.Thread(target=lambda: client.post(f"{srv.url}/v1/tts", json={"text": SENTENCES}))
        long.start()
        wait_until(lambda: srv.state.pools["slow"].busy)
        t0 = time.perf_counter()
        queued = client.post(f"{srv.url}/v1/tts", json={"text": "Never reached."})
        waited = time.perf_counter() - t0
        long.join(30)
        assert queued.status_code == 504 and 0.8 < waited < 2.0
        assert "in the queue" in queued.json()["error"]["message"]
        assert "Never reached." not in engines[0].spoken
        # the long one hit its own deadline while running: stopped at a sentence boundary, well short of 20
        assert len(engines[0].spoken) < 8
        assert sum(" timeout 504 " in line for line in srv.lines) == 2, srv.lines


def test_a_failing_engine_fails_its_request_with_500_and_ready_reports_it_while_others_serve():
    slow, _ = toy_voice("slow", delay=0.0)
    crashy, _ = toy_voice("crashy", delay=0.0)
    with InProcessServer([slow, crashy]) as srv, httpx.Client(timeout=30) as client:
        assert client.get(f"{srv.url}/ready").status_code == 200
        failed = speech(client, srv.url, "Please crash now.", voice="crashy")
        assert failed.status_code == 500
        err = failed.json()["error"]
        assert err["code"] == "engine_error" and err["type"] == "server_error"
        assert err["message"] == "voice crashy: engine failed: RuntimeError: CUDA out of memory (stand-in)"
        ready = client.get(f"{srv.url}/ready")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == ["voice crashy is out of service: engine failed: RuntimeError: "
                                           "CUDA out of memory (stand-in)"]
        again = speech(client, srv.url, "Hello.", voice="crashy")
        assert again.status_code == 503 and "out of service" in again.json()["error"]["message"]
        assert speech(client, srv.url, "Still here.", voice="slow").status_code == 200
        assert metric(client.get(f"{srv.url}/metrics").text, "voxfit_workers_up", voice="crashy") == 0


def test_speed_maps_to_the_engines_length_scale_and_voices_can_have_aliases():
    voice, engines = toy_voice("slow")
    with InProcessServer([voice], voice_aliases="alloy=slow") as srv, httpx.Client(timeout=30) as client:
        normal = speech(client, srv.url, "One.", voice="alloy")
        fast = speech(client, srv.url, "One.", voice="alloy", speed=2.0)
        assert normal.status_code == fast.status_code == 200
        assert len(fast.content) == pytest.approx(len(normal.content) / 2, rel=0.01)
        assert speech(client, srv.url, "One.", speed=5.0).status_code == 400


def test_an_engine_that_speaks_concurrently_serves_several_requests_at_once_each_with_its_options():
    voice, engines = toy_voice("shared", delay=0.3, concurrent=True)
    with InProcessServer([voice], max_queue=0) as srv, httpx.Client(timeout=30) as client:
        results: dict[float, httpx.Response] = {}

        def ask(scale: float) -> None:
            results[scale] = client.post(f"{srv.url}/v1/tts", json={"text": "One. Two.", "voice": "shared",
                                                                    "format": "pcm", "length_scale": scale})

        threads = [threading.Thread(target=ask, args=(s,)) for s in (1.0, 2.0)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wall = time.perf_counter() - t0
        assert len(engines) == 1 and engines[0].most_at_once == 2  # one engine, two requests at once
        assert engines[0].configured == 1  # at load only: requests pass their options per call
        assert wall < 1.1  # 2 x 2 sentences x 0.3 s would take 1.2 s one after the other
        ratio = len(results[2.0].content) / len(results[1.0].content)
        assert ratio == pytest.approx(2.0, rel=0.01)  # each request kept its own options
        assert srv.state.pools["shared"].workers[0].session is srv.state.pools["shared"].workers[1].session
