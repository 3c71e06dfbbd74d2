"""`voxfit serve --ray` on a local single-node Ray cluster with 2 replicas, as the docs start it.

One cluster for the module (starting Ray costs seconds): requests spread over
both replicas, each replica's plan and node are visible, streams come through
Ray's proxy, overload is a 503 with Retry-After, a client that leaves cancels
its synthesis in the replica, a killed replica is replaced with no later
request lost, and SIGTERM takes the whole cluster down. Loopback only; every
loop is bounded in count and time. ``-m 'not ray'`` skips this file locally.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

pytest.importorskip("ray")
import httpx  # noqa: E402
import psutil  # noqa: E402
from helpers import REPO  # noqa: E402
from serve_helpers import ServerProcess, clean_env, decode  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

SHORT = "Hello from a replica."
DRAIN_TIMEOUT = 30  # voxfit serve's default
LONG = " ".join(f"This is sentence number {i} of a long text, spoken to keep a replica busy." for i in range(12))


def page(name: str) -> str:
    return (REPO / "docs" / name).read_text()


def readme_command() -> list[str]:
    (command,) = re.findall(r"```sh\n(voxfit serve --ray.*?)\n```", page("ray.md"))
    return shlex.split(command)[2:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("ray")
    log = work / "requests.jsonl"
    env = clean_env(VOXFIT_CACHE_DIR=str(work / "cache"), RAY_USAGE_STATS_ENABLED="0")
    readme = readme_command()
    assert readme == ["--ray", "--replicas", "2"]
    # The README's command; the test only adds a free port, a short queue and a requests log to read.
    server = ServerProcess([*readme, "--port", "0", "--max-queue", "1", "--metrics-log", str(log)],
                           env=env, cwd=work, timeout=240)
    family = [server.proc.pid, *(p.pid for p in psutil.Process(server.proc.pid).children(recursive=True))]
    server.family, server.requests_log = family, log
    yield server
    server.stop()
    for pid in family:  # whatever a failed test left behind
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def plan(url: str) -> dict:
    response = httpx.get(f"{url}/v1/plan", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def speak(url: str, text: str = SHORT, **extra) -> httpx.Response:
    body = {"model": "tts-1", "input": text, "voice": "en_US-joe-medium", "response_format": "wav", **extra}
    return httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120)


def seconds(wav: bytes) -> float:
    samples, rate = decode(wav, "wav")
    return len(samples) / rate


def test_the_start_up_prints_each_node_class_and_what_its_replicas_hold(cluster):
    out = "\n".join(cluster.stdout)
    assert "node class cpu: 1 node(s)" in out and "2 replica(s)" in out
    assert "holds 1 CPU" in out  # 2 replicas share the 2 cores: one each, from the plan's 1 thread
    assert "Ray Serve: 2 replica(s)" in out


def test_every_replica_reports_its_plan_and_node(cluster):
    shown = plan(cluster.url)
    replicas = shown["replicas"]
    assert len(replicas) == 2 and len({r["pid"] for r in replicas}) == 2
    for r in replicas:
        voice = r["voices"]["en_US-joe-medium"]
        assert "1 thread" in voice["engine"] and voice["device"] == "cpu"
        assert r["node_id"] and r["hostname"] and r["node_class"] == "cpu" and r["ready"] is True
        assert r["resources"]["CPU"] == 1.0 and "GPU" not in r["resources"]  # a CPU plan holds no GPU
    assert shown["voices"]["en_US-joe-medium"]["chosen"]["device"] == "cpu"  # `voxfit serve`'s shape too
    (only,) = shown["node_classes"]
    assert only["request"]["num_gpus"] == 0 and only["request"]["num_cpus"] == 1


def test_the_openai_client_gets_speech_from_both_replicas(cluster):
    from openai import OpenAI

    client = OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    seen: dict[str, float] = {}

    def one(_: int) -> tuple[str, float]:
        raw = client.audio.speech.with_raw_response.create(model="tts-1", voice="en_US-joe-medium", input=SHORT,
                                                           response_format="wav")
        return raw.headers["x-voxfit-replica"], seconds(raw.content)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(6):  # bounded: pairs of concurrent requests until both replicas answered
            seen.update(pool.map(one, range(2)))
            if len(seen) == 2:
                break
    assert len(seen) == 2, f"one replica answered everything: {seen}"
    assert all(1.0 < s < 3.0 for s in seen.values()), seen


def test_streams_come_through_rays_proxy_in_pieces(cluster):
    body = {"model": "tts-1", "input": LONG[:400], "voice": "en_US-joe-medium", "response_format": "pcm",
            "stream_format": "sse"}
    events, started = [], time.monotonic()
    with httpx.stream("POST", f"{cluster.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        first = None
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:])["type"])
                first = first or time.monotonic() - started
    assert events.count("speech.audio.delta") >= 3 and events[-1] == "speech.audio.done"


def test_overload_is_turned_away_at_once_with_retry_after(cluster):
    # 2 replicas run 1 request each and Ray queues 1 more (--max-queue 1): of 8 at once, some are refused.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: speak(cluster.url, LONG[:300]), range(8)))
    refused = [a for a in answers if a.status_code == 503]
    assert refused and all(a.status_code in (200, 503) for a in answers)
    assert len(answers) - len(refused) >= 3
    for a in refused:
        assert a.headers["retry-after"] == "1"
        assert a.json()["error"]["code"] == "queue_full"
        assert a.elapsed.total_seconds() < 5  # at once, not after waiting


def test_a_client_that_leaves_cancels_its_synthesis_in_the_replica(cluster):
    body = {"model": "tts-1", "input": LONG, "voice": "en_US-joe-medium", "response_format": "pcm"}
    with httpx.stream("POST", f"{cluster.url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # the first sentence's audio, then hang up
    deadline, records = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        text = cluster.requests_log.read_text() if cluster.requests_log.exists() else ""
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        if any(r["characters"] == len(LONG) for r in records):
            break
        time.sleep(0.5)
    (mine,) = [r for r in records if r["characters"] == len(LONG)]
    assert mine["status"] == "cancelled", mine
    assert mine["audio_seconds"] < 20  # stopped early: the whole text is ~50 s of speech


def test_the_readme_curl_line_and_openai_example_work_against_the_cluster(cluster, tmp_path, monkeypatch):
    serving = page("serving.md").split("\n## The page at")[0]
    curl = re.findall(r"```sh\n(.*?)```", serving, flags=re.S)[1].replace("\\\n", " ").splitlines()[0]
    monkeypatch.chdir(tmp_path)
    subprocess.run(curl.replace("localhost:8000", cluster.url.removeprefix("http://")), shell=True, check=True,
                   timeout=60)
    samples, rate = decode((tmp_path / "hello.wav").read_bytes(), "wav")
    assert rate == 22050 and len(samples) / rate > 0.5
    example = re.findall(r"```python\n(.*?)```", serving, flags=re.S)[0].replace("http://127.0.0.1:8000", cluster.url)
    exec(compile(example, "README example", "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
    for name, fmt in (("hello.mp3", "mp3"), ("streamed.opus", "opus")):
        samples, rate = decode((tmp_path / name).read_bytes(), fmt)
        assert len(samples) / rate > 0.5, name


def test_the_page_is_served_through_the_cluster(cluster):
    page = httpx.get(f"{cluster.url}/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    scripts = re.findall(r'src="(/static/[^"]+)"', page.text)
    assert scripts and all(httpx.get(f"{cluster.url}{src}", timeout=30).status_code == 200 for src in scripts)
    voices = httpx.get(f"{cluster.url}/v1/audio/voices", timeout=30).json()  # what the page reads first
    assert voices["default"] in plan(cluster.url)["voices"]


def test_a_killed_replica_is_replaced_and_no_later_request_is_lost(cluster):
    before = plan(cluster.url)["replicas"]
    victim = before[0]
    os.kill(victim["pid"], signal.SIGKILL)
    answers = [speak(cluster.url) for _ in range(6)]  # at once after the kill: none may fail
    assert [a.status_code for a in answers] == [200] * 6, [a.text[:200] for a in answers if a.status_code != 200]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ray starts a new replica, which plans and reports in
        now = plan(cluster.url)["replicas"]
        if len(now) == 2 and victim["pid"] not in {r["pid"] for r in now}:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no replacement replica reported within 120 s: {now}")
    assert httpx.get(f"{cluster.url}/ready", timeout=30).json()["ready"] is True


def test_sigterm_takes_the_whole_cluster_down(cluster):
    # It runs after a replica was killed (above): the shutdown must not depend on every replica being healthy.
    started = time.monotonic()
    cluster.terminate()
    assert cluster.wait(timeout=90) == 0, cluster.log()[-2000:]
    assert time.monotonic() - started <= DRAIN_TIMEOUT + 10, f"took {time.monotonic() - started:.0f} s"
    after = cluster.log().split("stopping: in-flight requests get up to", 1)[1].splitlines()[1:]
    assert [line for line in after if line.strip()] in (["stopped"], [
        "stopped the local Ray cluster's processes: it did not shut down in time", "stopped"]), after
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [pid for pid in cluster.family if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, f"Ray processes left running: {alive}"
    assert "stopped" in cluster.log()


def test_the_api_key_is_asked_at_the_router(tmp_path):
    env = clean_env(VOXFIT_CACHE_DIR=str(tmp_path / "cache"), RAY_USAGE_STATS_ENABLED="0", VOXFIT_API_KEY="sesame")
    server = ServerProcess(["--ray", "--replicas", "1", "--port", "0"], env=env, cwd=tmp_path, timeout=240)
    try:
        url, key = server.url, {"Authorization": "Bearer sesame"}
        body = {"model": "tts-1", "voice": "en_US-joe-medium", "input": "Keyed.", "response_format": "wav"}
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        for path in ("/v1/plan", "/ready", "/metrics", "/v1/models"):
            denied = httpx.get(f"{url}{path}", timeout=30)
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key", path
            assert httpx.get(f"{url}{path}", headers=key, timeout=30).status_code == 200, path
        assert httpx.post(f"{url}/v1/audio/speech", json=body, timeout=60).status_code == 401
        assert httpx.post(f"{url}/v1/audio/speech", json=body, headers=key, timeout=60).status_code == 200
        assert httpx.get(f"{url}/", timeout=30).status_code == 200  # the page asks for the key itself
    finally:
        assert server.stop() == 0


def test_autoscale_adds_a_replica_when_ray_queue_grows(tmp_path):
    env = clean_env(VOXFIT_CACHE_DIR=str(tmp_path / "cache"), RAY_USAGE_STATS_ENABLED="0")
    server = ServerProcess(["--ray", "--autoscale", "1:2", "--port", "0", "--max-queue", "16"], env=env,
                           cwd=tmp_path, timeout=240)
    try:
        assert len(plan(server.url)["replicas"]) == 1
        stop = time.monotonic() + 90
        grown = False
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            while time.monotonic() < stop and not grown:  # bounded: batches of 4 long requests, 90 s at most
                batch = [pool.submit(speak, server.url, LONG[:300]) for _ in range(4)]
                grown = len(plan(server.url)["replicas"]) == 2
                for f in batch:
                    assert f.result().status_code in (200, 503)
        assert grown, "Ray did not add a replica under a queue of 4 for 90 s"
        assert all(r["resources"]["CPU"] == 1.0 for r in plan(server.url)["replicas"])  # a share sized for 2
    finally:
        assert server.stop() == 0


def test_a_replica_that_cannot_start_is_one_line_not_a_traceback(tmp_path):
    from helpers import voxfit_cli

    result = voxfit_cli("serve", "--ray", "--port", "0", "--metrics-log", str(tmp_path / "missing" / "log.jsonl"),
                       env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path / "cache"), RAY_USAGE_STATS_ENABLED="0"),
                       timeout=240)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: the replicas could not start: voices-cpu: FileNotFoundError")
    assert "log.jsonl" in lines[0]
