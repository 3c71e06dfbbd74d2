"""Soak: `voxfit serve` held at its queue's limit for minutes; nothing lost or malformed, memory flat.

More clients than the server admits (the requests its engine runs at once, plus
``--max-queue`` waiting; by default 4 more clients than that) send
requests in a closed loop for ``--seconds`` (>= 120 by default), rotating
through every response format and both routes, a few of them streamed and
abandoned half-way (a client that leaves). Every answer must be either

* 200 with audio that decodes (libsndfile; raw pcm by its size) to a
  plausible length for the text, or
* 503 with a Retry-After header and an OpenAI-shaped one-line error;

anything else (another status, a body that does not decode, a connection
error, a timeout) counts as lost or malformed. A client turned away waits a
quarter of a second (not the Retry-After: the point is to keep the queue full) and tries again.
The server's RSS is sampled every second; after ``--warmup`` seconds it must
stay within 10% of its post-warm-up median.

    python benchmarks/serve_soak.py [--seconds 120] [--clients N] [--max-queue 2] [--warmup 30]

Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _serving import start_voxfit, wav_seconds  # noqa: E402

TEXTS = [
    "Hello there.",
    "The quick brown fox jumps over the lazy dog. Then it rests in the shade.",
    "Numbers like 42 and 1999 are read out. So are dates, sometimes. Let us see how it goes today.",
]
FORMATS = ["wav", "pcm", "mp3", "opus", "flac"]


def decoded_seconds(data: bytes, fmt: str) -> float:
    import soundfile

    if fmt == "pcm":
        return len(data) / 2 / 24000
    if fmt == "wav":
        return wav_seconds(data)
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    return len(samples) / rate


def check_refusal(r) -> str:  # type: ignore[no-untyped-def]
    """'' if ``r`` is a well-formed 503, else what is wrong with it."""
    if "retry-after" not in r.headers or not r.headers["retry-after"].isdigit():
        return "503 without a numeric Retry-After"
    try:
        error = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return "503 without an OpenAI-shaped error body"
    if not error.get("message") or "\n" in error["message"]:
        return "503 whose message is not one line"
    return ""


class Soak:
    """Clients in a closed loop against one server, every answer classified, the server's RSS sampled."""

    def __init__(self, server, voice: str, seconds: float) -> None:
        import psutil

        self.server, self.voice = server, voice
        self.process = psutil.Process(server.pid)
        self.counts: Counter = Counter()
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.rss: list[tuple[float, int]] = []
        self.t0 = time.perf_counter()
        self.stop_at = self.t0 + seconds
        self.ticket = itertools.count()

    def note(self, kind: str, problem: str = "") -> None:
        with self.lock:
            self.counts[kind] += 1
            if problem and len(self.problems) < 50:
                self.problems.append(problem)

    def request(self, client, n: int):  # -> httpx.Request
        text, fmt = TEXTS[n % len(TEXTS)], FORMATS[n % len(FORMATS)]
        if n % 3 == 0:
            return client.build_request("POST", "/v1/tts", json={"text": text, "format": fmt, "stream": n % 2 == 0})
        return client.build_request("POST", "/v1/audio/speech", json={
            "model": "tts-1", "voice": self.voice, "input": text, "response_format": fmt})

    def one(self, client, n: int) -> None:
        import httpx

        text, fmt = TEXTS[n % len(TEXTS)], FORMATS[n % len(FORMATS)]
        try:
            r = client.send(self.request(client, n), stream=True)
            try:
                if n % 17 == 5 and r.status_code == 200:
                    next(r.iter_raw(), None)  # read a little, then leave
                    self.note("abandoned")
                    return
                body = r.read()
            finally:
                r.close()
        except httpx.HTTPError as exc:
            self.note("lost", f"{type(exc).__name__}: {exc}")
            return
        self.judge(r, body, text, fmt)

    def judge(self, r, body: bytes, text: str, fmt: str) -> None:
        if r.status_code == 503:
            problem = check_refusal(r)
            self.note("malformed" if problem else "refused", problem)
            time.sleep(0.25)
            return
        if r.status_code != 200:
            self.note("malformed", f"status {r.status_code}: {body[:200]!r}")
            return
        try:
            seconds = decoded_seconds(body, fmt)
        except Exception as exc:  # noqa: BLE001
            self.note("malformed", f"{fmt} does not decode: {exc}")
            return
        if not 0.3 < seconds < 2.0 * len(text) / 8:  # a plausible length for the text
            self.note("malformed", f"{fmt}: {seconds:.2f} s of audio for {len(text)} characters")
            return
        self.note("ok")

    def client_loop(self) -> None:
        import httpx

        with httpx.Client(base_url=self.server.url, timeout=120) as client:
            while time.perf_counter() < self.stop_at:
                self.one(client, next(self.ticket))

    def sample_rss(self) -> None:
        while time.perf_counter() < self.stop_at:
            self.rss.append((time.perf_counter() - self.t0, self.process.memory_info().rss))
            time.sleep(1.0)

    def run(self, clients: int) -> float:
        threads = [threading.Thread(target=self.client_loop) for _ in range(clients)]
        threads.append(threading.Thread(target=self.sample_rss))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - self.t0


def report(soak: Soak, work: Path, metrics: str, wall: float, args, running: int) -> bool:
    counts = soak.counts
    log = [json.loads(line) for line in (work / "requests.jsonl").read_text().splitlines()]
    after = [m for t, m in soak.rss if t >= args.warmup]
    median = statistics.median(after) if after else 0
    spread = max(abs(m - median) / median for m in after) if after else float("nan")
    print(f"{time.strftime('%Y-%m-%d')} soak: {wall:.0f} s, {args.clients} clients against {running} running at "
          f"once + queue {args.max_queue}")
    print(f"responses: {sum(counts.values())} ({dict(counts)})")
    print(f"server log: {len(log)} requests, outcomes {dict(Counter(r['status'] for r in log))}")
    for line in metrics.splitlines():
        if line.startswith(("voxfit_rejected_requests_total", "voxfit_speech_requests_total")):
            print(f"  {line}")
    if after:
        print(f"RSS after {args.warmup:g} s warm-up: median {median / 2**20:.0f} MiB, min {min(after) / 2**20:.0f}, "
              f"max {max(after) / 2**20:.0f} MiB, largest deviation {spread:.1%} (limit 10%)")
        tail = [f"{t:.0f}s {m / 2**20:.0f}" for t, m in soak.rss[:: max(1, len(soak.rss) // 12)]]
        print(f"RSS (MiB) over time: {', '.join(tail)}; first after warm-up {after[0] / 2**20:.0f}, "
              f"last {after[-1] / 2**20:.0f}")
    for problem in soak.problems[:10]:
        print(f"  problem: {problem}")
    if counts["refused"] == 0:
        print("the queue was never full: raise --clients")
    return counts["lost"] == 0 and counts["malformed"] == 0 and counts["refused"] > 0 and spread <= 0.10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=None, help="default: what the server admits, plus 4")
    parser.add_argument("--max-queue", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=30.0)
    args = parser.parse_args()
    import httpx

    work = Path(tempfile.mkdtemp(prefix="voxfit-soak-"))
    server = start_voxfit(work, "--max-queue", str(args.max_queue), "--request-timeout", "60",
                         "--metrics-log", str(work / "requests.jsonl"))
    offered = httpx.get(f"{server.url}/v1/audio/voices").json()
    entry = offered["voices"][0]
    running = entry["engines"] * entry["requests_per_engine"]
    if args.clients is None:
        args.clients = running + args.max_queue + 4
    soak = Soak(server, offered["default"], args.seconds)
    wall = soak.run(args.clients)
    metrics = httpx.get(f"{server.url}/metrics").text
    server.stop()
    ok = report(soak, work, metrics, wall, args, running)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
