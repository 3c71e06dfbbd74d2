"""Soak: `voxfit serve`'s memory against its plan's estimate, the longest inputs first, for minutes.

One server with the embedded voice. As many clients as the voice runs at once
(``requests_per_engine``) send texts in a closed loop for ``--seconds``
(600): first the longest a request may be (4,090 characters in one
sentence), then ever shorter ones, then the cycle again. The server's RSS is
sampled every 0.5 s. Reported: the estimate for that concurrency (the plan's
peak plus one request's share for each further request at once), the peak
RSS and its ratio to the estimate, and the RSS 15 s after the last request
against the RSS before the first. Goal: peak within 1.2x of the estimate, and
memory given back after the burst.

    python benchmarks/serve_memory.py [--seconds 600]

Exit status 0 when the peak is within 1.2x and the RSS falls back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _serving import start_voxfit  # noqa: E402

WORDS = "the quick brown fox jumps over the lazy dog and keeps on running".split()
LENGTHS = (4090, 2000, 1000, 400, 120, 40)  # longest first


def sentence(chars: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(chars // 4 + 10))[: chars - 1] + "."


def clients(url: str, n: int, seconds: float, counts: list[int]) -> None:
    import httpx

    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        with httpx.Client(timeout=300) as client:
            i = 0
            while time.monotonic() < stop:
                text = sentence(LENGTHS[(i + index) % len(LENGTHS)])
                response = client.post(f"{url}/v1/tts", json={"text": text, "format": "pcm"})
                counts[response.status_code == 200] += 1
                i += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    import httpx
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        server = start_voxfit(Path(tmp))
        try:
            process = psutil.Process(server.pid)
            entry = httpx.get(f"{server.url}/v1/audio/voices", timeout=30).json()["voices"][0]
            n, estimate = entry["requests_per_engine"], entry["estimate"]["peak_memory_bytes_serving"]
            httpx.post(f"{server.url}/v1/tts", json={"text": "Warm up."}, timeout=60)
            before = peak = process.memory_info().rss
            counts = [0, 0]
            runner = threading.Thread(target=clients, args=(server.url, n, args.seconds, counts))
            runner.start()
            while runner.is_alive():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.5)
            time.sleep(15)
            after = process.memory_info().rss
        finally:
            server.stop()
    mib = 2**20
    print(f"{time.strftime('%Y-%m-%d')}: {n} clients for {args.seconds:g} s, longest first: {counts[1]} answered, "
          f"{counts[0]} not 200")
    print(f"estimate at {n} at once: {estimate / mib:.0f} MiB; peak RSS {peak / mib:.0f} MiB "
          f"({peak / estimate:.2f}x the estimate, goal <= 1.2)")
    print(f"RSS before {before / mib:.0f} MiB, 15 s after the last request {after / mib:.0f} MiB")
    fell_back = after <= before + (peak - before) / 4
    return 0 if peak <= 1.2 * estimate and fell_back and counts[0] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
