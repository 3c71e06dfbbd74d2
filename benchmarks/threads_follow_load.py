"""Benchmark: a server started during a CPU hog, against one started quiet, after the hog ends.

`voxfit serve` plans its threads with the CPU load it sees; a server started
while another process was busy used to keep that plan for life. In one run:

1. server Q starts on a quiet machine (``VOXFIT_REPLAN_WINDOW=0``: the
   reference stays as planned);
2. a hog (a Python busy loop) runs for ``--hog`` seconds (10); a second after
   it starts, server F (following the load, the default
   ``VOXFIT_REPLAN_WINDOW``) and server S (``VOXFIT_REPLAN_WINDOW=0``: planned
   once, the old behaviour) start under it;
3. when the hog ends, the clock starts: ``--settle`` seconds (30) later, Q, F
   and S answer the same short sentence, ``--rounds`` times each (one at a
   time, so no two requests overlap). The medians of their latencies are compared.
   Requests go in blocks (Q F S S F Q), each shorter than the window, so the
   other servers' work does not read as load to F for a whole window.

Goal: F's median within 1.1x of Q's within 30 s of the hog's end; S shows what
not following costs. Exit status 0 when F's ratio is at most 1.1.

    python benchmarks/threads_follow_load.py [--hog 10] [--settle 30] [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _serving import BIN, Server, env_for  # noqa: E402

SENTENCE = "The quick brown fox jumps over the lazy dog."


def start(work: Path, name: str, window: str) -> Server:
    import re

    env = {**env_for(work / name), "VOXFIT_REPLAN_WINDOW": window}
    return Server(name, [str(BIN / "voxfit"), "serve", "--port", "0"], env,
                  listening=re.compile(r"listening on (http://\S+)"))


def threads(client, server: Server) -> int:
    return client.get(f"{server.url}/v1/plan").json()["voices"]["en_US-joe-medium"]["chosen"]["threads"]


def latencies(client, servers: dict[str, Server], rounds: int) -> dict[str, list[float]]:
    """``rounds`` requests per server in two blocks, ordered A B C C B A so drift hits them alike.

    Blocks, not request-by-request alternation: a server that follows the load sees the others' work as
    load, and a few seconds of it (shorter than its window) between its own blocks does not re-plan it.
    """
    out: dict[str, list[float]] = {name: [] for name in servers}
    for name in [*servers, *reversed(servers)]:
        for _ in range(rounds // 2):
            t0 = time.perf_counter()
            response = client.post(f"{servers[name].url}/v1/tts", json={"text": SENTENCE})
            out[name].append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hog", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    import httpx

    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=60) as client:
        work = Path(tmp)
        servers = {"quiet": start(work, "quiet", "0")}  # the reference: planned on a quiet machine, kept
        hog = subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + {args.hog}\n"
                                "while time.time() < end: pass"])
        try:
            time.sleep(1.0)
            servers["following"] = start(work, "following", "10")
            servers["planned-once"] = start(work, "planned-once", "0")
            at_start = {name: threads(client, s) for name, s in servers.items()}
            hog.wait(timeout=args.hog + 30)
            ended, ended_at = time.monotonic(), time.time()
            time.sleep(max(0.0, args.settle - (time.monotonic() - ended)))
            settled = {name: threads(client, s) for name, s in servers.items()}
            timed = latencies(client, servers, args.rounds)
            chosen = {name: client.get(f"{s.url}/v1/plan").json()["voices"]["en_US-joe-medium"]["chosen"]
                      for name, s in servers.items()}
            replans = {name: [f"{r['at'] - ended_at:+.0f} s: {r['was'].split(', ')[-2]} -> {r['now'].split(', ')[-2]}"
                              f" ({r['why'].split(': ', 1)[1]})" for r in
                              client.get(f"{s.url}/v1/plan").json()["load_follow"]["replans"] if r["swapped"]]
                       for name, s in servers.items()}
        finally:
            hog.kill()
            for s in servers.values():
                s.stop()
    p50 = {name: statistics.median(v) for name, v in timed.items()}
    print(f"threads at start: {at_start}; {args.settle:g} s after the {args.hog:g} s hog ended: {settled}")
    for name, lines in replans.items():
        print(f"{name} swapped engines (seconds after the hog ended): {lines or 'never'}")
    for name in servers:
        spinning = "spinning on" if chosen[name]["options"].get("allow_spinning") is not False else "spinning off"
        print(f"  {name:13s} {chosen[name]['threads']} thread(s), {spinning}; p50 {p50[name] * 1000:6.1f} ms  ({p50[name] / p50['quiet']:.2f}x quiet)")
    ratio = p50["following"] / p50["quiet"]
    print(f"following / quiet = {ratio:.2f} (goal <= 1.10); planned-once / quiet = {p50['planned-once'] / p50['quiet']:.2f}")
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
