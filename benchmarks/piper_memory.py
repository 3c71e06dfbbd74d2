"""Benchmark: what one Piper request holds in memory, by the length of the chunk it speaks, and what gives it back.

For each chunk length (characters of one sentence handed to the engine at
once) a fresh process loads the embedded voice with the chosen plan, speaks
the same 4,090-character single-sentence text cut at that length, and reports
its RSS: loaded, peak (sampled every 20 ms), 3 s after the text, and the wall
time. Each length runs twice: with ONNX Runtime's arena kept for the life of
the session (``shrink_arena`` off), and as the cpu_onnx plugin runs it (the
arena shrunk by one tiny run once the session has been idle for 2 s). The
per-character figure (peak less loaded, over the chunk length) is what the
plugin's estimate uses.

    python benchmarks/piper_memory.py [--lengths 100,200,400]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys, threading, time
import psutil
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.settings import load_settings
from voxfit.speaking.session import Session
from voxfit.speaking.text import split_sentences

length, shrink = int(sys.argv[1]), sys.argv[2] == "1"
settings = load_settings(allow_plugins=["cpu_onnx"])
host = PluginHost.from_entry_points(settings)
plan = make_plan(host)
plan.chosen.options = plan.chosen.options.model_copy(update={"shrink_arena": shrink})
session = Session(settings=settings, host=host, plan=plan)
proc = psutil.Process()
rss = lambda: proc.memory_info().rss
words = "the quick brown fox jumps over the lazy dog and keeps on running".split()
text = " ".join(words[i % len(words)] for i in range(700))[:4089] + "."
loaded, peak, done = rss(), rss(), False
def watch():
    global peak
    while not done:
        peak = max(peak, rss())
        time.sleep(0.02)
watcher = threading.Thread(target=watch)
watcher.start()
t0 = time.perf_counter()
for chunk in split_sentences(text, length):
    for _ in session.loaded.engine.synthesize(chunk):
        pass
wall = time.perf_counter() - t0
time.sleep(3)  # the session's idle moment: a shrinking one gives its arena back
done = True
watcher.join()
print(json.dumps({"loaded": loaded, "peak": peak, "after": rss(), "wall": wall, "threads": plan.chosen.threads}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="100,200,400")
    args = parser.parse_args()
    mib = 2**20
    print("chunk  arena        loaded  peak     after    per char   wall")
    for length in (int(x) for x in args.lengths.split(",")):
        for shrink in (False, True):
            out = subprocess.run([sys.executable, "-c", CHILD, str(length), "1" if shrink else "0"],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode:
                print(out.stderr[-2000:])
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            per_char = (r["peak"] - r["loaded"]) / length
            print(f"{length:5d}  {'idle-shrunk' if shrink else 'kept       '}  {r['loaded'] / mib:5.0f}  {r['peak'] / mib:6.0f}"
                  f"  {r['after'] / mib:6.0f} MiB  {per_char / mib:5.2f} MiB  {r['wall']:5.1f} s"
                  f"  ({r['threads']} thread(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
