"""Benchmark: time to first audio of `voxfit run --stream` against `piper --output-raw`, same voice, same run.

Both start as fresh processes with the text on stdin and stream to a pipe;
the clock runs from just before the process starts to the first audio byte
on its stdout (for voxfit: the first byte after the 44-byte WAV header).
Texts: a short first sentence and a long first sentence with a clause mark
(the case where voxfit speaks the first clause first). `voxfit --sentence-silence 0`
is the same run without the clause split (sentence silence disables it),
to show what the split gains. Alternating, REPS times after a warm-up; medians.
The ratio voxfit / piper, for a short and a long first sentence.

    python benchmarks/first_audio.py [--reps 5]
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

BIN = Path(sys.executable).parent
TEXTS = {
    "short first sentence (7 words)": "Hello there, this is a short sentence. It is followed by a second one.",
    "long first sentence (26 words)": (
        "When the morning train finally pulled into the station after a delay of almost three hours, the passengers "
        "who had waited on the cold platform cheered and clapped. Then they boarded."
    ),
}


def first_audio(cmd: list[str], text: str, env: dict, skip: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    proc.stdin.write(text.encode())
    proc.stdin.close()
    got = 0
    while got <= skip:
        block = proc.stdout.read1(65536)
        if not block:
            raise SystemExit(f"{cmd[0]} produced no audio (exit {proc.wait()})")
        got += len(block)
    elapsed = time.perf_counter() - t0
    proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    from voxfit_cpu_onnx.piper_spec import embedded_default

    voice = embedded_default()
    work = Path(tempfile.mkdtemp(prefix="voxfit-bench-first-"))
    env = dict(os.environ, VOXFIT_CACHE_DIR=str(work / "cache"))
    commands = {
        "voxfit": ([str(BIN / "voxfit"), "run", "--stream", "-q", "-"], 44),
        "voxfit, no clause split": ([str(BIN / "voxfit"), "run", "--stream", "-q", "--sentence-silence", "0", "-"], 44),
        "piper": ([str(BIN / "piper"), "-m", str(voice.path), "--output-raw"], 0),
    }
    print(f"voice {voice.name}; {args.reps} alternating runs each; median seconds to the first audio byte")
    for name, text in TEXTS.items():
        for cmd, skip in commands.values():
            first_audio(cmd, text, env, skip)  # warm-up (and voxfit's optimised-graph cache)
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.reps):
            for label, (cmd, skip) in commands.items():
                times[label].append(first_audio(cmd, text, env, skip))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}:")
        for label in commands:
            print(f"  {label:<24} {med[label]:6.2f} s   / piper {med[label] / med['piper']:.2f}")
        ratio = med["voxfit"] / med["piper"]
        print(f"  voxfit / piper: {ratio:.2f}")


if __name__ == "__main__":
    main()
