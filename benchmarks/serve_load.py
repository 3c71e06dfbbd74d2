"""Benchmark: `voxfit serve` under closed-loop load, against Piper's own HTTP server and `voxfit run` per request.

Same embedded voice, same text, same run, on loopback. For each contender and
each concurrency (1, 2, 4, 8 by default), that many clients each send a request
as soon as their previous one is answered, for ``--seconds`` after one warm-up
request each. Reported per cell: requests/s, audio seconds per wall second,
p50/p95 latency (request sent -> last byte) and p50/p95 time to first audio
(request sent -> first audio byte), then the ratios voxfit serve / Piper and
voxfit serve / `voxfit run` per request.

* voxfit serve: `voxfit serve --port 0 --max-queue 64` (one worker, the planned
  engine), `POST /v1/audio/speech` with `response_format: wav` (streamed, the
  voice's own 22.05 kHz: no resampling, as Piper's);
* Piper: `python -m piper.http_server -m VOICE --host 127.0.0.1 --port P`
  (Flask's threaded development server, the one Piper ships; `pip install --group bench`),
  `POST /synthesize` with `{"text": ...}`; it returns the whole WAV;
* `voxfit run` per request: a fresh `voxfit run --stream -q TEXT` process per
  request (the cost a caller pays without a server); first audio is the first
  byte after the WAV header on its stdout.

Prints, for each concurrency, requests and audio seconds per second, p50 and p95 latency and time to first
audio, and the ratios voxfit serve / each other contender.

    python benchmarks/serve_load.py [--seconds 20] [--concurrency 1 2 4 8] [--text short|paragraph]
                                    [--workers-per-engine N] [--skip-run] [--skip-piper]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))
from _serving import BIN, Result, Server, env_for, free_port, start_voxfit, wav_seconds  # noqa: E402
from texts import PARAGRAPH, SHORT  # noqa: E402


def _timed_post(endpoint: str, payload: dict) -> Callable[[object], Result]:
    """One streamed POST returning WAV, timed to its first and last byte."""
    def one(client) -> Result:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        first = None
        body = bytearray()
        with client.stream("POST", endpoint, json=payload) as r:
            for piece in r.iter_raw():
                if first is None and piece:
                    first = time.perf_counter()
                body += piece
        end = time.perf_counter()
        if r.status_code != 200:
            return Result(False, status=r.status_code, error=bytes(body[:200]).decode(errors="replace"))
        return Result(True, end - t0, (first or end) - t0, wav_seconds(bytes(body)), 200)
    return one


def voxfit_request(url: str, text: str, voice: str) -> Callable[[object], Result]:
    return _timed_post(f"{url}/v1/audio/speech",
                       {"model": "tts-1", "voice": voice, "input": text, "response_format": "wav"})


def piper_request(url: str, text: str) -> Callable[[object], Result]:
    return _timed_post(f"{url}/synthesize", {"text": text})


def run_request(text: str, env: dict) -> Callable[[object], Result]:
    def one(_client) -> Result:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "voxfit"), "run", "--stream", "-q", text], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        header = proc.stdout.read(44)
        first_audio = proc.stdout.read(1)
        first = time.perf_counter()
        rest = proc.stdout.read()
        proc.wait()
        end = time.perf_counter()
        if proc.returncode != 0:
            return Result(False, status=proc.returncode, error=proc.stderr.read().decode()[-200:])
        return Result(True, end - t0, first - t0, wav_seconds(header + first_audio + rest), 200)
    return one


def closed_loop(request: Callable[[object], Result], concurrency: int, seconds: float) -> tuple[list[Result], float]:
    import httpx

    results: list[Result] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client_loop() -> None:
        with httpx.Client(timeout=300) as client:
            request(client)  # warm-up: a connection, the server's first request
            start.wait()
            while time.perf_counter() < stop_at[0]:
                try:
                    result = request(client)
                except Exception as exc:  # noqa: BLE001 - counted as a failure, the run goes on
                    result = Result(False, error=repr(exc)[:200])
                with lock:
                    results.append(result)

    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(results: list[Result], wall: float) -> dict:
    ok = [r for r in results if r.ok]
    return {
        "n": len(ok), "failed": len(results) - len(ok), "rps": len(ok) / wall,
        "audio_per_s": sum(r.audio_seconds for r in ok) / wall,
        "p50": statistics.median([r.latency for r in ok]) if ok else float("nan"),
        "p95": pct([r.latency for r in ok], 0.95),
        "ttfa50": statistics.median([r.ttfa for r in ok]) if ok else float("nan"),
        "ttfa95": pct([r.ttfa for r in ok], 0.95),
        "errors": sorted({r.error for r in results if not r.ok})[:3],
    }


def start_contenders(args, text: str, voice, work: Path, servers: list) -> dict[str, Callable[[object], Result]]:
    """Start the servers to compare (appended to ``servers`` to stop later); a request function for each."""
    env = env_for(work)
    ours = start_voxfit(work, "--max-queue", "64", "--workers-per-engine", str(args.workers_per_engine))
    servers.append(ours)
    contenders = {"voxfit serve": voxfit_request(ours.url, text, voice.name)}
    if not args.skip_piper:
        try:
            import flask  # noqa: F401
        except ImportError:
            raise SystemExit("Piper's HTTP server needs Flask: pip install --group bench (or pass --skip-piper)") from None
        port = free_port()
        piper = Server("piper.http_server", [sys.executable, "-m", "piper.http_server", "-m", str(voice.path),
                                             "--host", "127.0.0.1", "--port", str(port)], env,
                       ready_url=f"http://127.0.0.1:{port}/info")
        servers.append(piper)
        contenders["piper http"] = piper_request(piper.url, text)
    if not args.skip_run:
        contenders["voxfit run/request"] = run_request(text, env)
    return contenders


def measure(contenders: dict[str, Callable[[object], Result]], args) -> dict[tuple[str, int], dict]:
    table: dict[tuple[str, int], dict] = {}
    for c in args.concurrency:
        for name, request in contenders.items():
            results, wall = closed_loop(request, c, args.seconds)
            table[(name, c)] = s = summarize(results, wall)
            print(f"  measured {name:<18} c={c}: {s['n']} ok, {s['failed']} failed"
                  + (f" ({'; '.join(s['errors'])})" if s["errors"] else ""), file=sys.stderr, flush=True)
    return table


def print_table(table: dict[tuple[str, int], dict], names: list[str], args) -> None:
    print(f"{'contender':<18} {'c':>2} {'req/s':>7} {'audio s/s':>9} {'p50 s':>7} {'p95 s':>7} "
          f"{'TTFA p50':>8} {'TTFA p95':>8} {'failed':>6}")
    for c in args.concurrency:
        for name in names:
            s = table[(name, c)]
            print(f"{name:<18} {c:>2} {s['rps']:7.2f} {s['audio_per_s']:9.2f} {s['p50']:7.3f} {s['p95']:7.3f} "
                  f"{s['ttfa50']:8.3f} {s['ttfa95']:8.3f} {s['failed']:>6}")
    for other in [n for n in names if n != "voxfit serve"]:
        print(f"\nratios voxfit serve / {other} (latency < 1 and throughput > 1: voxfit better)")
        print(f"{'c':>2} {'req/s':>7} {'p50':>7} {'p95':>7} {'TTFA p50':>8}")
        for c in args.concurrency:
            a, b = table[("voxfit serve", c)], table[(other, c)]
            print(f"{c:>2} {a['rps'] / b['rps']:7.2f} {a['p50'] / b['p50']:7.2f} {a['p95'] / b['p95']:7.2f} "
                  f"{a['ttfa50'] / b['ttfa50']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--text", choices=["short", "paragraph"], default="short")
    parser.add_argument("--workers-per-engine", type=int, default=1, help="voxfit serve's workers (engines) per voice")
    parser.add_argument("--skip-run", action="store_true", help="leave out `voxfit run` per request")
    parser.add_argument("--skip-piper", action="store_true", help="leave out Piper's HTTP server")
    args = parser.parse_args()
    text = SHORT if args.text == "short" else PARAGRAPH
    from voxfit_cpu_onnx.piper_spec import embedded_default

    voice = embedded_default()
    servers: list[Server] = []
    try:
        contenders = start_contenders(args, text, voice, Path(tempfile.mkdtemp(prefix="voxfit-serve-bench-")), servers)
        table = measure(contenders, args)
    finally:
        for server in servers:
            server.stop()
    print(f"{time.strftime('%Y-%m-%d')}: voice {voice.name}; text {args.text!r} ({len(text)} characters); voxfit "
          f"serve with {args.workers_per_engine} worker(s); closed loop, {args.seconds:g} s per cell after one "
          "warm-up request per client; latency = request sent -> last byte")
    print_table(table, list(contenders), args)


if __name__ == "__main__":
    main()
