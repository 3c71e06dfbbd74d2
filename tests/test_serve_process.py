"""`voxfit serve` as a process: start-up refusals, the drain on SIGTERM."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from helpers import embedded_voice, voxfit_cli
from serve_helpers import ServerProcess, clean_env, decode

pytestmark = pytest.mark.timeout(180)

LONG = " ".join(f"This is sentence number {i}, which keeps the worker busy." for i in range(10))


def test_sigterm_drains_new_requests_get_503_in_flight_ones_finish_and_it_exits_0(tmp_path):
    proc = ServerProcess(["--port", "0", "--drain-timeout", "60"], env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path)),
                         cwd=tmp_path)
    try:
        result: dict = {}

        def long_request() -> None:
            result["r"] = httpx.post(f"{proc.url}/v1/tts", json={"text": LONG, "format": "wav"}, timeout=120)

        worker = threading.Thread(target=long_request)
        worker.start()
        deadline = time.monotonic() + 20
        while 'voxfit_in_flight{voice="en_US-joe-medium"} 1.0' not in httpx.get(f"{proc.url}/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.terminate()
        time.sleep(0.2)
        refused = httpx.post(f"{proc.url}/v1/tts", json={"text": "Too late."}, timeout=10)
        ready = httpx.get(f"{proc.url}/ready", timeout=10)
        still_running = worker.is_alive()
        worker.join(120)
        assert proc.wait(60) == 0
    finally:
        proc.stop()
    assert still_running  # the refusal below came while the long request was in flight
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    assert ready.status_code == 503 and ready.json()["reasons"] == ["the server is shutting down"]
    r = result["r"]
    assert r.status_code == 200
    samples, rate = decode(r.content, "wav")
    seconds = len(samples) / rate
    assert seconds == pytest.approx(float(r.headers["X-Voxfit-Audio-Seconds"]), abs=1e-3) and seconds > 10
    assert "SIGTERM: draining" in proc.log() and "drained: every request finished" in proc.log()


def test_the_drain_is_bounded(tmp_path):
    proc = ServerProcess(["--port", "0", "--drain-timeout", "0.5"], env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path)),
                         cwd=tmp_path)
    try:
        got: list[bytes] = []
        broken: list[Exception] = []

        def stream() -> None:
            try:
                with httpx.stream("POST", f"{proc.url}/v1/audio/speech", timeout=120,
                                  json={"model": "tts-1", "voice": "en_US-joe-medium", "input": LONG * 3,
                                        "response_format": "pcm"}) as r:
                    for piece in r.iter_raw():
                        got.append(piece)
            except httpx.HTTPError as exc:
                broken.append(exc)

        reader = threading.Thread(target=stream)
        reader.start()
        deadline = time.monotonic() + 20
        while not got:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.terminate()
        assert proc.wait(30) == 0
        stopped_in = time.monotonic() - t0
        reader.join(30)
    finally:
        proc.stop()
    assert stopped_in < 8  # 0.5 s of drain, then the stream stops at its next sentence
    assert "still running after 0.5 s" in proc.log()
    assert sum(len(p) for p in got) / 2 / 24000 < 60  # cut short of the ~100 s asked for
    assert len(broken) == 1  # ... and the client can tell: the response ends without its last chunk
    assert " cancelled " in proc.log() and "shutting down" in proc.log() and "Traceback" not in proc.log()


def test_models_that_do_not_fit_together_are_refused_at_start_with_the_reason(tmp_path):
    r = voxfit_cli("serve", "--port", "0", "--workers-per-engine", "64", env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path)),
                  cwd=tmp_path, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: voice en_US-joe-medium (64 x ~") and "does not fit in system RAM" in line
    assert "listening" not in r.stdout.decode()  # refused before loading or listening


def test_the_same_model_twice_and_a_dangling_alias_are_refused(tmp_path):
    env = clean_env(VOXFIT_CACHE_DIR=str(tmp_path))
    voice = str(embedded_voice())
    twice = voxfit_cli("serve", "--port", "0", "-m", voice, "-m", voice, env=env, cwd=tmp_path, timeout=120)
    assert twice.returncode == 2 and "are both voice 'en_US-joe-medium'" in twice.stderr.decode()
    alias = voxfit_cli("serve", "--port", "0", "--voice-alias", "alloy=nobody", env=env, cwd=tmp_path, timeout=120)
    assert alias.returncode == 2 and "voice alias alloy=nobody: no voice 'nobody' is served" in alias.stderr.decode()
    bad = voxfit_cli("serve", "--max-queue", "-1", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("error: invalid value -1 from --max-queue")


def test_two_models_are_two_voices(tmp_path):
    import shutil

    copy = tmp_path / "second"
    copy.mkdir()
    voice = embedded_voice()
    for f in voice.parent.iterdir():
        if f.name.startswith(voice.name):
            shutil.copy(f, copy / f.name.replace(voice.stem, "en_US-copy-medium"))
    second = copy / voice.name.replace(voice.stem, "en_US-copy-medium")
    proc = ServerProcess(["--port", "0", "-m", str(voice), "-m", str(second)],
                         env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path / "cache")), cwd=tmp_path)
    try:
        names = [v["voice"] for v in httpx.get(f"{proc.url}/v1/audio/voices").json()["voices"] if "alias_of" not in v]
        spoken = httpx.post(f"{proc.url}/v1/tts", json={"text": "Second voice.", "voice": names[1]}, timeout=60)
    finally:
        proc.stop()
    assert names == ["en_US-joe-medium", "en_US-copy-medium"] and spoken.status_code == 200


def test_workers_per_engine_loads_that_many_engines_from_one_plan(tmp_path):
    proc = ServerProcess(["--port", "0", "--workers-per-engine", "2"], env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path)),
                         cwd=tmp_path)
    try:
        entry = httpx.get(f"{proc.url}/v1/audio/voices").json()["voices"][0]
        ready = httpx.get(f"{proc.url}/ready").json()["voices"]["en_US-joe-medium"]
        spoken = [httpx.post(f"{proc.url}/v1/tts", json={"text": f"Number {i}."}, timeout=60) for i in range(3)]
    finally:
        proc.stop()
    assert entry["engines"] == 2 and ready["workers"] == 2 * entry["requests_per_engine"]
    assert [r.status_code for r in spoken] == [200, 200, 200]
    assert proc.log().count("loaded voice en_US-joe-medium: ") == 1 and "2 engine(s)" in proc.log()
