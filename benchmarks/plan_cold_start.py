"""Cold start of `voxfit plan` against the bare import of its three main dependencies.

All measured in the same run, alternating, as fresh processes; the figure
that matters is the ratio: how much voxfit adds on top of what any pluggy +
pydantic + click program pays just to start. Two ways `voxfit plan` runs:
with its plan cache (what a user gets from the second plan on, while nothing
the plan depends on changed) and without (an empty cache directory every
time: plugins, detection, scoring, ranking).

    python benchmarks/plan_cold_start.py [--runs 15] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 3):
        sys.exit(f"{' '.join(cmd)} failed: {result.stderr.decode().strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--model", default=None, help="model to plan for (default: the embedded voice)")
    args = parser.parse_args()
    voxfit = str(Path(sys.executable).with_name("voxfit"))
    plan_cmd = [voxfit, "plan"] + (["--model", args.model] if args.model else [])
    work = Path(tempfile.mkdtemp(prefix="voxfit-bench-plan-"))
    cached_env = dict(os.environ, VOXFIT_CACHE_DIR=str(work / "cache"))
    contenders = {
        "python -c 'import pluggy, pydantic, click'": ([sys.executable, "-c", "import pluggy, pydantic, click"],
                                                        lambda i: os.environ),
        "voxfit plan (plan cache)": (plan_cmd, lambda i: cached_env),
        "voxfit plan (no plan cache)": (plan_cmd, lambda i: dict(os.environ, VOXFIT_CACHE_DIR=str(work / f"fresh-{i}"))),
    }
    for cmd, env in contenders.values():
        timed(cmd, env(-1))  # warm the page cache (and fill the plan cache)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for i in range(args.runs):
        for name, (cmd, env) in contenders.items():
            times[name].append(timed(cmd, env(i)))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[next(iter(contenders))]
    print(f"runs: {args.runs} each, alternating, median wall time")
    for name, m in med.items():
        print(f"{name:<45} {m * 1000:7.1f} ms  {m / base:5.2f}x  (adds {(m - base) * 1000:+.0f} ms)")
    cached = med["voxfit plan (plan cache)"] / base
    print(f"voxfit plan with a remembered plan / the imports alone: {cached:.2f}x")


if __name__ == "__main__":
    main()
