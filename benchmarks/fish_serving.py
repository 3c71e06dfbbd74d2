"""Fish Speech through `voxfit serve`: audio per second at 1 and 4 clients, first byte against the whole response.

One server, the tiny checkpoint (built here with fish-speech's own classes,
random weights, the published layout), the plan as chosen (batched: requests
decode together). Each phase runs a closed loop for ``--seconds``:

* 1 client, then 4 clients at once, each sending one sentence (``/v1/tts``,
  ``format: pcm``): audio seconds delivered per wall second, and the ratio.
  The two take turns, three rounds of ``--seconds / 3`` each, and the ratio is
  of their totals (this machine's speed drifts over minutes).
* one client streaming one sentence (``stream: true``): the time of the first
  audio byte over the time of the whole response (the median of its requests).

The same run repeated with ``VOXFIT_MAX_BATCH=1`` (one request at a time, as
before batching) is the baseline for the 4-client figure.

    python benchmarks/fish_serving.py [--seconds 20]

Goal: 4 clients get >= 2.5x the audio per second of one; a streamed sentence
starts within 0.35 of its whole time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _serving import BIN, Server, env_for  # noqa: E402
from voxfit.server.encoding import PCM_RATE as RATE  # noqa: E402  (raw pcm is OpenAI's: 24 kHz, 16-bit)

#: turns of 1 client then 4 clients in each phase
ROUNDS = 3
SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


def closed_loop(url: str, clients: int, seconds: float) -> tuple[float, float, int, int]:
    """(audio seconds, wall seconds, answered, failed) for ``clients`` each sending one request after another
    for ``seconds`` (the requests under way then are awaited and counted)."""
    import httpx

    audio, answered, failed = [0.0], [0], [0]
    lock = threading.Lock()
    start = time.monotonic()
    stop = start + seconds

    def loop() -> None:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < stop:
                response = client.post(f"{url}/v1/tts", json={"text": SENTENCE, "format": "pcm"})
                with lock:
                    if response.status_code == 200:
                        audio[0] += len(response.content) / 2 / RATE
                        answered[0] += 1
                    else:
                        failed[0] += 1

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return audio[0], time.monotonic() - start, answered[0], failed[0]


def first_byte_share(url: str, requests: int) -> float:
    """Median of (first audio byte / whole response) for one streamed sentence."""
    import httpx

    shares = []
    with httpx.Client(timeout=120) as client:
        for _ in range(requests):
            t0 = time.perf_counter()
            first = None
            with client.stream("POST", f"{url}/v1/tts", json={"text": SENTENCE, "format": "pcm", "stream": True}) as r:
                for chunk in r.iter_bytes():
                    if chunk and first is None:
                        first = time.perf_counter() - t0
            total = time.perf_counter() - t0
            shares.append((first or total) / total)
    return statistics.median(shares)


def phase(work: Path, checkpoint: Path, seconds: float, max_batch: str) -> dict[str, Any]:
    env = {**env_for(work), "VOXFIT_MAX_BATCH": max_batch}
    server = Server("voxfit serve", [str(BIN / "voxfit"), "serve", "--port", "0", "--model", str(checkpoint)], env,
                    listening=re.compile(r"listening on (http://\S+)"))
    totals = {1: [0.0, 0.0], 4: [0.0, 0.0]}  # clients -> [audio s, wall s]
    answered = failed = 0
    rounds = []
    try:
        closed_loop(server.url, 1, min(5.0, seconds))  # warm-up: the codec's first runs
        # 1 and 4 clients take turns, a short stretch each: this machine's speed drifts by a third over
        # minutes, and the ratio of two phases run one after the other would measure the drift
        for _ in range(ROUNDS):
            rates = {}
            for clients in (1, 4):
                audio, wall, n, f = closed_loop(server.url, clients, seconds / ROUNDS)
                totals[clients][0] += audio
                totals[clients][1] += wall
                answered, failed, rates[clients] = answered + n, failed + f, audio / wall
            rounds.append(rates[4] / rates[1])
        share = first_byte_share(server.url, 10)
    finally:
        server.stop()
    one, four = (totals[c][0] / totals[c][1] for c in (1, 4))
    return {"one": one, "four": four, "answered": answered, "failed": failed, "share": share,
            "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    from voxfit.engines.fish.tiny import build_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="voxfit-bench-") as tmp:
        checkpoint = build_tiny_checkpoint(Path(tmp) / "tiny-s1")
        batched = phase(Path(tmp), checkpoint, args.seconds, "4")
        single = phase(Path(tmp), checkpoint, args.seconds, "1")
    date = time.strftime("%Y-%m-%d")
    for name, r in (("batched (VOXFIT_MAX_BATCH=4)", batched), ("one at a time (VOXFIT_MAX_BATCH=1)", single)):
        print(f"{date} {name}: 1 client {r['one']:.2f} audio s/s, 4 clients {r['four']:.2f} audio s/s "
              f"({r['four'] / r['one']:.2f}x; by round {', '.join(f'{x:.2f}' for x in r['rounds'])}); "
              f"{r['answered']:.0f} answered, {r['failed']:.0f} failed; "
              f"streamed first byte at {r['share']:.2f} of the whole response")
    print(f"4 clients batched / 4 clients one at a time: {batched['four'] / single['four']:.2f}x")
    ok = batched["four"] >= 2.5 * batched["one"] and batched["share"] <= 0.35 and not batched["failed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
