"""Memory a server holds, against what its plan says: long sentences from two clients at once, then quiet.

A real `voxfit serve` with the embedded voice. Two clients each send one
sentence of 4,090 characters (an over-long sentence is cut at the engine's
declared chunk length, so its activations are bounded whatever the text). The
server's RSS, sampled every 50 ms, must stay within 1.2x of the estimate for
two requests at once (the plan's peak plus one request's share), and fall
back to near where it started once both are answered.
"""

from __future__ import annotations

import threading
import time

import httpx
import psutil
import pytest
from serve_helpers import ServerProcess, clean_env

pytestmark = pytest.mark.timeout(300)

WORDS = "the quick brown fox jumps over the lazy dog and keeps on running".split()
LONG = " ".join(WORDS[i % len(WORDS)] for i in range(700))[:4089] + "."


def test_two_long_sentences_at_once_stay_within_the_estimate_and_memory_comes_back(tmp_path):
    server = ServerProcess(["--port", "0"], env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path)), cwd=tmp_path)
    process = psutil.Process(server.proc.pid)
    try:
        entry = httpx.get(f"{server.url}/v1/audio/voices", timeout=30).json()["voices"][0]
        estimate = entry["estimate"]
        assert entry["requests_per_engine"] >= 2, "the engine runs one request at a time: nothing to measure"
        expected = estimate["peak_memory_bytes"] + estimate["per_request_bytes"]  # two requests at once
        assert estimate["peak_memory_bytes_serving"] >= expected
        httpx.post(f"{server.url}/v1/tts", json={"text": "Warm up."}, timeout=60)
        before = process.memory_info().rss
        peak, done, statuses = before, threading.Event(), []

        def client() -> None:
            statuses.append(httpx.post(f"{server.url}/v1/tts", json={"text": LONG, "format": "pcm"},
                                       timeout=240).status_code)

        clients = [threading.Thread(target=client) for _ in range(2)]
        for c in clients:
            c.start()
        while any(c.is_alive() for c in clients):
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)
        deadline, after = time.monotonic() + 10, process.memory_info().rss
        while time.monotonic() < deadline and after > before + estimate["per_request_bytes"] / 2:
            time.sleep(0.2)
            after = process.memory_info().rss
        done.set()
    finally:
        code = server.stop()
    mib = 2**20
    assert statuses == [200, 200]
    assert peak <= 1.2 * expected, f"peak RSS {peak / mib:.0f} MiB, estimate {expected / mib:.0f} MiB"
    assert after <= before + estimate["per_request_bytes"] / 2, (
        f"RSS {after / mib:.0f} MiB after the burst, {before / mib:.0f} MiB before it")
    assert code == 0
