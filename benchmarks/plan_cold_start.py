"""Cold start of `ttsfw plan` against the bare import of its three main dependencies.

Both are measured in the same run, alternating, as fresh processes; the
figure that matters is the ratio: how much ttsfw adds on top of what any
pluggy + pydantic + click program pays just to start.

    python benchmarks/plan_cold_start.py [--runs 15] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 3):
        sys.exit(f"{' '.join(cmd)} failed: {result.stderr.decode().strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--model", default=None, help="model to plan for (default: the embedded voice)")
    args = parser.parse_args()
    ttsfw = str(Path(sys.executable).with_name("ttsfw"))
    plan_cmd = [ttsfw, "plan"] + (["--model", args.model] if args.model else [])
    baseline_cmd = [sys.executable, "-c", "import pluggy, pydantic, click"]
    timed(plan_cmd), timed(baseline_cmd)  # warm the page cache for both
    plan_t, base_t = [], []
    for _ in range(args.runs):
        plan_t.append(timed(plan_cmd))
        base_t.append(timed(baseline_cmd))
    p, b = statistics.median(plan_t), statistics.median(base_t)
    print(f"runs: {args.runs} each, alternating, median wall time")
    print(f"python -c 'import pluggy, pydantic, click': {b * 1000:7.1f} ms")
    print(f"{' '.join(['ttsfw'] + plan_cmd[1:])}: {p * 1000:7.1f} ms")
    print(f"ratio ttsfw plan / baseline: {p / b:.2f}x   (ttsfw adds {(p - b) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
