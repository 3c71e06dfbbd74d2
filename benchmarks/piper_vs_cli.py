"""Benchmark (a): `voxfit run` against Piper's own `piper` CLI, same voice, same texts, same run.

For each text (a short sentence, a paragraph, a ~2,000-word passage) both
commands run as fresh processes, alternately, REPS times after one warm-up
each (the OS file cache is warm for both). Wall time is measured around the
process; peak RSS is the child's ru_maxrss from wait4. Reported: medians and
the ratios voxfit / piper (< 1 means voxfit is faster / smaller).

    python benchmarks/piper_vs_cli.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from texts import TEXTS  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], stdin_path: Path, env: dict) -> tuple[float, int]:
    with stdin_path.open("rb") as stdin:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss * 1024


def seconds(path: Path) -> float:
    with wave.open(str(path)) as r:
        return r.getnframes() / r.getframerate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    from voxfit_cpu_onnx.piper_spec import embedded_default

    voice = embedded_default()
    work = Path(tempfile.mkdtemp(prefix="voxfit-bench-"))
    env = dict(os.environ, VOXFIT_CACHE_DIR=str(work / "cache"))  # a fresh machine: nothing tuned
    rows = []
    for name, text in TEXTS.items():
        src = work / "text.txt"
        src.write_text(text, encoding="utf-8")
        ours = [str(BIN / "voxfit"), "run", "-", "-q", "-o", str(work / "voxfit.wav")]
        theirs = [str(BIN / "piper"), "-m", str(voice.path), "-f", str(work / "piper.wav")]
        results: dict[str, list[tuple[float, int]]] = {"voxfit": [], "piper": []}
        timed(ours, src, env), timed(theirs, src, env)  # warm-up, not counted
        for _ in range(args.reps):
            results["voxfit"].append(timed(ours, src, env))
            results["piper"].append(timed(theirs, src, env))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in results.items()}
        rows.append((name, len(text.split()), seconds(work / "voxfit.wav"), seconds(work / "piper.wav"), med))
    print(f"voice {voice.name}; {args.reps} alternating runs per tool and text; medians")
    print(f"{'text':<18} {'words':>5} {'audio s':>13} {'wall s':>15} {'wall ratio':>10} {'peak RSS MB':>13} {'RSS ratio':>9}")
    print(f"{'':<18} {'':>5} {'voxfit/piper':>13} {'voxfit/piper':>15} {'voxfit÷piper':>10} {'voxfit/piper':>13} {'':>9}")
    for name, words, a_ours, a_theirs, med in rows:
        (w1, r1), (w2, r2) = med["voxfit"], med["piper"]
        print(f"{name:<18} {words:>5} {a_ours:6.1f}/{a_theirs:<6.1f} {w1:7.2f}/{w2:<7.2f} {w1 / w2:10.2f}"
              f" {r1 / 2**20:6.0f}/{r2 / 2**20:<6.0f} {r1 / r2:9.2f}")
    (w1, _), (w2, _) = rows[0][4]["voxfit"], rows[0][4]["piper"]
    print(f"short sentence wall ratio voxfit / piper: {w1 / w2:.2f}")


if __name__ == "__main__":
    main()
