"""Benchmark: after `voxfit tune`, is the chosen proposal as fast end to end as the best one? In every tune run?

In one run: RUNS independent `voxfit tune` processes (each with its own empty
measurement cache; the int8 and optimised-graph files are made once and
shared, as on a real machine), interleaved with a reference measurement of
every proposal: REF rounds, round robin, each visit a fresh session start
plus a short sentence and a paragraph (benchmarks/texts.py). The reference
gives each proposal's median end-to-end time (session start + synthesis, what
a fresh `voxfit run` waits for beyond the imports all proposals share); each
tune run's choice is reported as a ratio to the best proposal's, for the
short sentence and the paragraph. Goal: <= 1.05 in every tune run.

    python benchmarks/tune_stability.py [--runs 5] [--tune-rounds 3] [--ref-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from texts import PARAGRAPH, SHORT  # noqa: E402

WORKLOADS = {"short": SHORT, "paragraph": PARAGRAPH}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tune-rounds", type=int, default=3)
    parser.add_argument("--ref-rounds", type=int, default=3, help="reference rounds after each tune run")
    args = parser.parse_args()
    from voxfit.planning import measurements as tuning
    from voxfit.planning.planner import make_plan
    from voxfit.plugins import PluginHost
    from voxfit.settings import load_settings
    from voxfit.tuning.round_robin import measure_round_robin
    from voxfit.tuning.trials import engine_measurer

    work = Path(tempfile.mkdtemp(prefix="voxfit-bench-tune-"))
    shared = work / "shared-cache"
    host = PluginHost.from_entry_points(load_settings(cache_dir=str(shared), allow_plugins=["cpu_onnx"]))
    plan = make_plan(host)
    quiet = plan.hardware.model_copy(update={"flags": {k: v for k, v in plan.hardware.flags.items()
                                                       if not k.startswith("cpu_load_")}})
    plan = make_plan(host, model=plan.model, hardware=quiet)  # as tune plans: the machine as built
    proposals = {tuning.proposal_key(p): p for p in plan.ranked()}
    measure = engine_measurer(host, plan, proposals, workloads=WORKLOADS)
    measure_round_robin(list(proposals), measure, 0)  # one warm-up visit each: makes the int8 / optimised files
    voxfit = str(Path(sys.executable).with_name("voxfit"))
    reference: dict[str, list] = {k: [] for k in proposals}
    chosen: list[str] = []
    for run in range(args.runs):
        cache = work / f"run-{run}"
        shutil.copytree(shared / "cpu_onnx", cache / "cpu_onnx")
        shutil.copy(shared / "hashes.json", cache / "hashes.json")
        env = {**os.environ, "VOXFIT_CACHE_DIR": str(cache)}
        out = subprocess.run([voxfit, "--allow-plugin", "cpu_onnx", "tune", "--rounds", str(args.tune_rounds),
                              "--json"], env=env, capture_output=True, check=True)
        decision = json.loads(out.stdout)["decision"]
        chosen.append(decision["winner"])
        samples, failed = measure_round_robin(list(proposals), measure, args.ref_rounds)
        for key, got in samples.items():
            reference[key].extend(got)
        print(f"tune run {run + 1}: chose {proposals[decision['winner']].options.get('variant')}"
              + (f" (failed in reference: {failed})" if failed else ""), flush=True)
    e2e = {k: {w: statistics.median(s.end_to_end(w) for s in v) for w in WORKLOADS} for k, v in reference.items() if v}
    best = {w: min(m[w] for m in e2e.values()) for w in WORKLOADS}
    print(f"\n{args.runs} tune runs (--rounds {args.tune_rounds}), reference {args.ref_rounds * args.runs} "
          "round-robin rounds interleaved with them; end to end = session start + synthesis, medians")
    print(f"{'start s':>7} {'short s':>7} {'para s':>7} {'short/best':>10} {'para/best':>9}  proposal")
    for k, m in sorted(e2e.items(), key=lambda kv: kv[1]["paragraph"]):
        start = statistics.median(s.load_seconds for s in reference[k])
        print(f"{start:7.2f} {m['short']:7.2f} {m['paragraph']:7.2f} {m['short'] / best['short']:10.2f} "
              f"{m['paragraph'] / best['paragraph']:9.2f}  {proposals[k].label()}")
    worst = 1.0
    for run, key in enumerate(chosen, start=1):
        ratios = {w: e2e[key][w] / best[w] for w in WORKLOADS}
        worst = max(worst, *ratios.values())
        print(f"run {run}: {proposals[key].options.get('variant'):<18} short {ratios['short']:.2f}x best, "
              f"paragraph {ratios['paragraph']:.2f}x best")
    print(f"distinct choices: {len(set(chosen))}; worst ratio to the best: {worst:.2f} "
          f"({'meets' if worst <= 1.05 else 'misses'} the <= 1.05 goal)")


if __name__ == "__main__":
    main()
