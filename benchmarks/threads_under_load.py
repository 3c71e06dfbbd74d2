"""Benchmark: threads fitted to the CPU load at plan time, against the quiet-machine choice, with a competing load.

In one run, for each condition (quiet, then COMPETITORS busy processes, each
a Python busy loop): plan twice, once as `voxfit run` does (the cpu_onnx
plugin reads the load and fits threads and spinning to it) and once for the
machine as built (load snapshot removed: the thread count a load-blind plan
picks). Both engines are loaded; they speak the paragraph and a longer
passage alternately, ROUNDS times; medians of RTF. Ratio < 1: the
load-aware choice is faster. On a quiet machine both plans must agree.

    python benchmarks/threads_under_load.py [--rounds 5] [--competitors 1] [--words 400]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from texts import PARAGRAPH, passage  # noqa: E402

BUSY = "while True: pass"


class Null:
    def write(self, pcm: bytes) -> None:
        pass


def measure(rounds: int, texts: dict[str, str]) -> None:
    from voxfit.planning.planner import make_plan
    from voxfit.plugins import PluginHost
    from voxfit.settings import load_settings
    from voxfit.speaking import load as runtime
    from voxfit.speaking.synthesis import synthesize
    from voxfit.speaking.text import split_sentences

    host = PluginHost.from_entry_points(load_settings(allow_plugins=["cpu_onnx"]))
    aware = make_plan(host)
    hw = aware.hardware
    blind = make_plan(host, model=aware.model, hardware=hw.model_copy(
        update={"flags": {k: v for k, v in hw.flags.items() if not k.startswith("cpu_load_")}}))
    seen = next((r for r in aware.chosen.reasons if "at plan time" in r), "no load reason")
    print(f"  load-aware plan: {aware.chosen.label()} {aware.chosen.options.get('allow_spinning', 'spinning default')}")
    print(f"    reason: {seen}")
    print(f"  load-blind plan: {blind.chosen.label()}")
    engines = {"aware": runtime.load(host, aware).engine, "blind": runtime.load(host, blind).engine}
    for engine in engines.values():
        synthesize(engine, ["Warm up."], Null())
    for name, text in texts.items():
        chunks = split_sentences(text, 400)
        rtf: dict[str, list[float]] = {k: [] for k in engines}
        for r in range(rounds):
            for k in (list(engines) if r % 2 == 0 else list(engines)[::-1]):  # alternate who goes first
                rtf[k].append(synthesize(engines[k], chunks, Null()).rtf)
        a, b = statistics.median(rtf["aware"]), statistics.median(rtf["blind"])
        print(f"  {name:<10} RTF load-aware {a:.3f}  load-blind {b:.3f}  ratio {a / b:.2f}")
    for engine in engines.values():
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--competitors", type=int, default=1)
    parser.add_argument("--words", type=int, default=400, help="length of the long text")
    args = parser.parse_args()
    texts = {"paragraph": PARAGRAPH, f"{args.words} words": passage(args.words)}
    print(f"quiet machine ({args.rounds} alternating rounds, medians):")
    measure(args.rounds, texts)
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.competitors)]
    try:
        time.sleep(1.0)  # let the competitors get going
        print(f"\nwith {args.competitors} competing busy process(es):")
        measure(args.rounds, texts)
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
