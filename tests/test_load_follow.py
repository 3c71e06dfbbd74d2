"""A running server follows the CPU load: a voice planned under another process's load is re-planned once
the load has changed for the window, and requests keep being answered while its engines are swapped."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest
from serve_helpers import ServerProcess, clean_env
from voxfit.planning.cpu_affinity import usable_count
from voxfit.planning.cpu_load import CpuLoad

pytestmark = pytest.mark.timeout(240)


def fake_state(planned: CpuLoad) -> SimpleNamespace:
    plan = SimpleNamespace(hardware=SimpleNamespace(flags=planned.as_flags()))
    return SimpleNamespace(voices={"v": SimpleNamespace(plan=plan)})


def test_a_voice_is_due_only_after_the_load_differed_for_the_whole_window():
    from voxfit.server.follow import LoadFollower

    follower = LoadFollower(fake_state(CpuLoad(1.0, 1.0)), window=10, loop=None, echo=print)
    quiet, busy = CpuLoad(0.0, 2.0), CpuLoad(1.0, 2.0)
    assert follower.due(busy, at=0) == []  # the load it was planned for
    assert follower.due(quiet, at=1) == []  # differs from now on
    assert follower.due(quiet, at=10) == []
    assert follower.due(busy, at=10.5) == []  # back to the plan's load: the count starts again
    assert follower.due(quiet, at=12) == []
    assert follower.due(quiet, at=22) == ["v"]


def test_a_plan_that_read_no_load_is_never_due():
    from voxfit.server.follow import LoadFollower

    plan = SimpleNamespace(hardware=SimpleNamespace(flags={}))
    follower = LoadFollower(SimpleNamespace(voices={"v": SimpleNamespace(plan=plan)}), 1, None, print)
    assert follower.due(CpuLoad(5.0, 2.0), 0) == [] and follower.due(CpuLoad(5.0, 2.0), 100) == []


def threads(url: str) -> int:
    plan = httpx.get(f"{url}/v1/plan", timeout=30).json()
    return plan["voices"]["en_US-joe-medium"]["chosen"]["threads"]


@pytest.mark.skipif((usable_count() or 1) < 2, reason="one CPU: every load plans one thread")
def test_a_server_started_under_a_hog_gets_its_threads_back_after_it(tmp_path):
    hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"])
    try:
        time.sleep(1.0)  # the hog is running before the server looks
        server = ServerProcess(["--port", "0"], env=clean_env(VOXFIT_CACHE_DIR=str(tmp_path), VOXFIT_REPLAN_WINDOW="3"),
                               cwd=tmp_path)
    except BaseException:
        hog.kill()
        raise
    try:
        under_hog = threads(server.url)
        hog.kill()
        hog.wait()
        deadline = time.monotonic() + 30  # /v1/plan is no request to speak: the server stays idle
        while time.monotonic() < deadline and threads(server.url) <= under_hog:
            time.sleep(0.5)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            follow = client.get("/v1/plan").json()["load_follow"]
            after = threads(server.url)
            answered = [client.post("/v1/tts", json={"text": "Again."}).status_code for _ in range(3)]
    finally:
        hog.kill()
        code = server.stop()
    assert under_hog < usable_count(), f"planned {under_hog} threads beside a busy core"
    assert after > under_hog, follow
    assert set(answered) == {200}
    swapped = [r for r in follow["replans"] if r["swapped"]]
    assert swapped and "CPU load changed for 3 s" in swapped[-1]["why"], follow
    assert f"{after} thread" in swapped[-1]["now"] and follow["window_seconds"] == 3
    log = server.log()
    assert code == 0 and "Traceback" not in log and "re-planned" in log, log[-2000:]


class Spoken:
    """A stand-in session: it speaks one chunk per sentence, after ``release`` is set, and records closing."""

    def __init__(self, name: str) -> None:
        import threading

        self.name, self.closed, self.release = name, False, threading.Event()

    def stream(self, text, **_):
        assert self.release.wait(10) and not self.closed
        yield self.name

    def close(self) -> None:
        self.closed = True


def test_a_swap_lets_running_requests_finish_on_the_old_engine_and_closes_it_after_them():
    import asyncio

    from voxfit.server.pool import Job, VoicePool, Worker

    old, new = Spoken("old"), Spoken("new")
    new.release.set()

    async def scenario():
        pool = VoicePool("v", [Worker("v", 0, old), Worker("v", 1, old)], max_queue=4)
        running = asyncio.ensure_future(anext(pool.run(Job("v", "Hi.", None, timeout=30))))
        while not pool.busy:
            await asyncio.sleep(0.01)
        pool.swap({id(old): new}, close=lambda session: session.close())
        assert all(w.session is new for w in pool.workers) and not old.closed  # a request still runs on it
        fresh = [chunk async for chunk in pool.run(Job("v", "Next.", None, timeout=30))]
        old.release.set()
        first = await running
        for _ in range(100):
            if old.closed:
                break
            await asyncio.sleep(0.01)
        return first, fresh

    first, fresh = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert first == "old" and fresh == ["new"] and old.closed and not new.closed
