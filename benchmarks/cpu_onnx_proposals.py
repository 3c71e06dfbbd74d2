"""Benchmark (b): every cpu_onnx proposal's measured RTF here against the one the ranker chose.

Plans for the embedded voice with an empty cache (a fresh machine: nothing
tuned), loads every ranked proposal through the plugins' load_engine, warms
each up, then has them speak the same paragraph in turn (round robin, ROUNDS
times) so that load on the machine hits all of them alike. Reports per
proposal: session start (load) time, median RTF, and the ratio to the best;
then what the ranker chose, and how far it is from the best measured.
Session start is also measured separately: FRESH new sessions per variant,
alternating, to show what memory-reuse planning costs at start-up.

    python benchmarks/cpu_onnx_proposals.py [--rounds 5] [--fresh 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from texts import PARAGRAPH  # noqa: E402


class Null:
    def write(self, pcm: bytes) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=5)
    args = parser.parse_args()
    from voxfit.planning.planner import make_plan
    from voxfit.plugins import PluginHost
    from voxfit.settings import load_settings
    from voxfit.speaking.synthesis import synthesize
    from voxfit.speaking.text import split_sentences

    cache = tempfile.mkdtemp(prefix="voxfit-bench-cache-")
    host = PluginHost.from_entry_points(load_settings(cache_dir=cache, allow_plugins=["cpu_onnx"]))
    plan = make_plan(host)
    ranked = plan.ranked()

    def load(p):
        t0 = time.perf_counter()
        engine, _ = host.call("load_engine", proposal=p, model=plan.model, settings=host.settings)
        return engine, time.perf_counter() - t0

    # Session start: fresh sessions, alternating between variants (the int8 files already exist after one load).
    for p in ranked:
        load(p)[0].close()
    starts: dict[int, list[float]] = {i: [] for i in range(len(ranked))}
    for _ in range(args.fresh):
        for i, p in enumerate(ranked):
            engine, seconds = load(p)
            starts[i].append(seconds)
            engine.close()
    engines = [load(p)[0] for p in ranked]
    chunks = split_sentences(PARAGRAPH, 400)
    for engine in engines:
        synthesize(engine, ["Warm up."], Null())
    rtfs: dict[int, list[float]] = {i: [] for i in range(len(ranked))}
    audio = 0.0
    for _ in range(args.rounds):
        for i, engine in enumerate(engines):
            m = synthesize(engine, chunks, Null())
            rtfs[i].append(m.rtf)
            audio = m.audio_seconds
    med = {i: statistics.median(v) for i, v in rtfs.items()}
    best = min(med.values())
    print(f"model {plan.model.name}; paragraph of {len(PARAGRAPH.split())} words (~{audio:.0f} s of audio); "
          f"{args.rounds} round-robin rounds, {args.fresh} fresh session starts per proposal; medians")
    print(f"{'rank':>4} {'score':>6} {'start s':>7} {'RTF':>6} {'RTF/best':>8}  proposal")
    for i, p in enumerate(ranked):
        mark = "  <- chosen" if i == 0 else ""
        print(f"{i + 1:>4} {p.score:6.2f} {statistics.median(starts[i]):7.2f} {med[i]:6.3f} {med[i] / best:8.2f}  "
              f"{p.options.get('variant')} ({p.threads} threads, {p.quantization}){mark}")
    print(f"chosen without measurements: {ranked[0].options.get('variant')}, RTF {med[0]:.3f}, "
          f"{(med[0] / best - 1) * 100:+.1f}% vs best measured ({ranked[min(med, key=med.get)].options.get('variant')})")
    for engine in engines:
        engine.close()

    # What `voxfit tune` (the explicit measurement a user runs once) makes the ranker choose.
    import os
    import subprocess

    voxfit = str(Path(sys.executable).with_name("voxfit"))
    env = {**os.environ, "VOXFIT_CACHE_DIR": cache}
    subprocess.run([voxfit, "--allow-plugin", "cpu_onnx", "tune", "--rounds", "3", "--json"], env=env, check=True,
                   capture_output=True)
    tuned = make_plan(PluginHost.from_entry_points(load_settings(cache_dir=cache, allow_plugins=["cpu_onnx"])))
    j = next(i for i, p in enumerate(ranked) if p.label() == tuned.chosen.label())
    print(f"chosen after `voxfit tune`: {ranked[j].options.get('variant')}, RTF {med[j]:.3f} in this run, "
          f"{(med[j] / best - 1) * 100:+.1f}% vs best measured")


if __name__ == "__main__":
    main()
