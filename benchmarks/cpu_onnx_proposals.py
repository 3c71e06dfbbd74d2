"""Every cpu_onnx proposal's measured RTF here against the one the ranker chose.

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


def _host(cache: str):  # -> PluginHost
    from voxfit.plugins import PluginHost
    from voxfit.settings import load_settings

    return PluginHost.from_entry_points(load_settings(cache_dir=cache, allow_plugins=["cpu_onnx"]))


def _load(host, plan, p):  # -> (engine, seconds)
    t0 = time.perf_counter()
    engines, _ = host.call_owner("load_engine", p.plugin, proposal=p, model=plan.model, settings=host.settings,
                                 engines=host.registry)
    return engines[0], time.perf_counter() - t0


def session_starts(host, plan, ranked, fresh: int) -> dict[int, list[float]]:
    """Fresh sessions, alternating between variants (the int8 files already exist after one load)."""
    for p in ranked:
        _load(host, plan, p)[0].close()
    starts: dict[int, list[float]] = {i: [] for i in range(len(ranked))}
    for _ in range(fresh):
        for i, p in enumerate(ranked):
            engine, seconds = _load(host, plan, p)
            starts[i].append(seconds)
            engine.close()
    return starts


def round_robin_rtfs(host, plan, ranked, rounds: int) -> tuple[dict[int, float], float]:
    """Median RTF per proposal over ``rounds`` round-robin rounds on the paragraph, and its audio seconds."""
    from voxfit.speaking.synthesis import synthesize
    from voxfit.speaking.text import split_sentences

    engines = [_load(host, plan, p)[0] for p in ranked]
    chunks = split_sentences(PARAGRAPH, 400)
    for engine in engines:
        synthesize(engine, ["Warm up."], Null())
    rtfs: dict[int, list[float]] = {i: [] for i in range(len(ranked))}
    audio = 0.0
    for _ in range(rounds):
        for i, engine in enumerate(engines):
            m = synthesize(engine, chunks, Null())
            rtfs[i].append(m.rtf)
            audio = m.audio_seconds
    for engine in engines:
        engine.close()
    return {i: statistics.median(v) for i, v in rtfs.items()}, audio


def tuned_choice(cache: str) -> str:
    """What `voxfit tune` (the explicit measurement a user runs once) makes the ranker choose."""
    import os
    import subprocess

    from voxfit.planning.planner import make_plan

    voxfit = str(Path(sys.executable).with_name("voxfit"))
    env = {**os.environ, "VOXFIT_CACHE_DIR": cache}
    subprocess.run([voxfit, "--allow-plugin", "cpu_onnx", "tune", "--rounds", "3", "--json"], env=env, check=True,
                   capture_output=True)
    return make_plan(_host(cache)).chosen.label()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=5)
    args = parser.parse_args()
    from voxfit.planning.planner import make_plan

    cache = tempfile.mkdtemp(prefix="voxfit-bench-cache-")
    host = _host(cache)
    plan = make_plan(host)
    ranked = plan.ranked()
    starts = session_starts(host, plan, ranked, args.fresh)
    med, audio = round_robin_rtfs(host, plan, ranked, args.rounds)
    best = min(med.values())
    print(f"{time.strftime('%Y-%m-%d')}: model {plan.model.name}; paragraph of {len(PARAGRAPH.split())} words "
          f"(~{audio:.0f} s of audio); {args.rounds} round-robin rounds, {args.fresh} fresh session starts per "
          "proposal; medians")
    print(f"{'rank':>4} {'score':>6} {'start s':>7} {'RTF':>6} {'RTF/best':>8}  proposal")
    for i, p in enumerate(ranked):
        mark = "  <- chosen" if i == 0 else ""
        print(f"{i + 1:>4} {p.score:6.2f} {statistics.median(starts[i]):7.2f} {med[i]:6.3f} {med[i] / best:8.2f}  "
              f"{p.options.variant} ({p.threads} threads, {p.quantization}){mark}")
    print(f"chosen without measurements: {ranked[0].options.variant}, RTF {med[0]:.3f}, "
          f"{(med[0] / best - 1) * 100:+.1f}% vs best measured ({ranked[min(med, key=med.get)].options.variant})")
    label = tuned_choice(cache)
    j = next(i for i, p in enumerate(ranked) if p.label() == label)
    print(f"chosen after `voxfit tune`: {ranked[j].options.variant}, RTF {med[j]:.3f} in this run, "
          f"{(med[j] / best - 1) * 100:+.1f}% vs best measured")


if __name__ == "__main__":
    main()
