"""Benchmark: `voxfit serve --ray` with 1 and 2 replicas against the single-machine `voxfit serve`, in one run.

Same embedded voice, same text, same closed loop as ``serve_load.py`` (each
client sends its next request when the previous one is answered, for
``--seconds`` after a warm-up request each), on loopback, one server at a time:

* ``voxfit serve --port 0 --max-queue 64``: one process, the planned engine;
* ``voxfit serve --ray --replicas 1`` and ``--replicas 2`` on a local Ray cluster
  (each replica plans for its share of the cores: 2 threads for one replica,
  1 thread each for two on this 2-core machine).

Reported per cell: requests/s, audio seconds per wall second, p50/p95 latency
and time to first audio; then the scaling ratio (2 replicas / 1 replica,
audio s per s at the highest concurrency), the Ray deployment against the
single process at the same concurrency, and Ray's overhead per request (p50
latency at concurrency 1, Ray with one replica minus the single process: the
proxy, the router and the handle call; both synthesize with the same threads).

    python benchmarks/ray_scaling.py [--seconds 15] [--concurrency 1 4] [--text short|paragraph]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _serving import start_voxfit  # noqa: E402
from serve_load import closed_loop, summarize, voxfit_request  # noqa: E402
from texts import PARAGRAPH, SHORT  # noqa: E402

CONTENDERS = {
    "voxfit serve": ["--max-queue", "64"],
    "ray, 1 replica": ["--ray", "--replicas", "1", "--max-queue", "64"],
    "ray, 2 replicas": ["--ray", "--replicas", "2", "--max-queue", "64"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--text", choices=["short", "paragraph"], default="short")
    args = parser.parse_args()
    text = SHORT if args.text == "short" else PARAGRAPH
    from voxfit_cpu_onnx.piper_spec import embedded_default

    voice = embedded_default().name
    cells: dict[tuple[str, int], dict] = {}
    for name, flags in CONTENDERS.items():
        server = start_voxfit(Path(tempfile.mkdtemp(prefix="voxfit-ray-bench-")), *flags)
        try:
            for c in args.concurrency:
                results, wall = closed_loop(voxfit_request(server.url, text, voice), c, args.seconds)
                cells[name, c] = summarize(results, wall)
                row = cells[name, c]
                print(f"  {name:<16} c={c}: {row['n']} ok, {row['failed']} failed, {row['audio_per_s']:.2f} audio s/s,"
                      f" p50 {row['p50'] * 1000:.0f} ms", flush=True)
        finally:
            server.stop()
    print(f"\nvoice {voice}, text {args.text!r} ({len(text.split())} words); closed loop, {args.seconds:g} s per cell")
    print(f"{'server':<16} {'c':>2} {'ok':>4} {'fail':>4} {'req/s':>6} {'audio s/s':>9} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'ttfa50 ms':>9}")
    for (name, c), r in cells.items():
        print(f"{name:<16} {c:>2} {r['n']:>4} {r['failed']:>4} {r['rps']:>6.2f} {r['audio_per_s']:>9.2f} "
              f"{r['p50'] * 1000:>7.0f} {r['p95'] * 1000:>7.0f} {r['ttfa50'] * 1000:>9.0f}")
    top, low = max(args.concurrency), min(args.concurrency)
    one, two, single = cells["ray, 1 replica", top], cells["ray, 2 replicas", top], cells["voxfit serve", top]
    print(f"\nscaling, 2 replicas / 1 replica at c={top}: {two['audio_per_s'] / one['audio_per_s']:.2f}x audio s/s")
    print(f"Ray with 2 replicas / voxfit serve at c={top}: {two['audio_per_s'] / single['audio_per_s']:.2f}x audio s/s")
    overhead = cells["ray, 1 replica", low]["p50"] - cells["voxfit serve", low]["p50"]
    print(f"Ray's overhead per request (p50 at c={low}, 1 replica minus voxfit serve): {overhead * 1000:.0f} ms "
          f"({cells['ray, 1 replica', low]['p50'] / cells['voxfit serve', low]['p50']:.2f}x)")


if __name__ == "__main__":
    main()
