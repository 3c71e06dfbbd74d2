"""Wyoming on the server's queue, with stand-in engines: a full queue and a failing engine are error events."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from serve_helpers import toy_voice
from voxfit.settings import Settings
from wyoming.audio import AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

pytestmark = pytest.mark.timeout(120)


class WyomingOnly:
    """ServerState + WyomingService on a loopback port, in a thread with its own event loop."""

    def __init__(self, voices: list, **settings) -> None:
        from voxfit.server.app import ServerState
        from voxfit.server.metrics import ServerMetrics
        from voxfit.server.wyoming import WyomingService, bind

        self.lines: list[str] = []
        self.state = ServerState(voices, Settings(**settings), ServerMetrics(echo=self.lines.append))
        self.sock = bind("tcp://127.0.0.1:0")
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.service = WyomingService(self.state, self.sock)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.service.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port, connect_timeout=10, read_timeout=30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.state.close()
        self.sock.close()


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_a_full_queue_and_a_failing_engine_are_error_events():
    voice, engines = toy_voice("toy", delay=1.0)
    srv = WyomingOnly([voice], max_queue=0)
    try:
        async def go():
            async with srv.client() as busy, srv.client() as other:
                await busy.write_event(Synthesize(text="One. Two. Three.").event())
                assert AudioStart.is_type((await busy.read_event()).type)
                deadline = time.monotonic() + 10
                while not srv.state.pools["toy"].busy:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                await other.write_event(Synthesize(text="Me too.").event())
                full = await other.read_event()  # the error alone: no audio-start before it
                # A stream whose sentence is refused answers once, then stops cleanly.
                await other.write_event(SynthesizeStart().event())
                await other.write_event(SynthesizeChunk(text="Streamed. And").event())
                refused = await other.read_event()
                await other.write_event(SynthesizeChunk(text=" more. Text.").event())
                await other.write_event(SynthesizeStop().event())
                stopped = await other.read_event()
                # The last piece, spoken at the stop, refused: its error, then the stream still ends.
                await other.write_event(SynthesizeStart().event())
                await other.write_event(SynthesizeChunk(text="Unfinished").event())
                await other.write_event(SynthesizeStop().event())
                last = [await other.read_event(), await other.read_event()]
            return full, refused, stopped, last

        full, refused, stopped, last = run(go())
        assert Error.is_type(full.type)
        error = Error.from_event(full)
        assert error.code == "queue_full" and "VOXFIT_MAX_QUEUE=0" in error.text
        assert Error.is_type(refused.type) and Error.from_event(refused).code == "queue_full"
        assert SynthesizeStopped.is_type(stopped.type)
        assert [e.type for e in last] == ["error", "synthesize-stopped"]
        assert Error.from_event(last[0]).code == "queue_full"

        async def crash():
            async with srv.client() as c:
                await c.write_event(Synthesize(text="Please crash now.").event())
                first = await c.read_event()  # no audio-start before a failure with no audio
                await c.write_event(Synthesize(text="After the crash.").event())
                return first, await c.read_event()

        deadline = time.monotonic() + 10
        while srv.state.pools["toy"].busy:  # the first client's request is stopped at its next sentence
            assert time.monotonic() < deadline
            time.sleep(0.05)
        failed, after = run(crash())
        assert Error.is_type(failed.type)
        error = Error.from_event(failed)
        assert error.code == "engine_error" and error.text == "voice toy: engine failed: RuntimeError: CUDA out of memory (stand-in)"
        assert Error.is_type(after.type) and Error.from_event(after).code == "dead"  # out of service, said so
        outcomes = [r["status"] for r in srv.state.metrics.recent]
        assert "rejected" in outcomes and "engine_error" in outcomes
    finally:
        srv.close()


def test_connections_past_the_limit_are_told_and_closed(monkeypatch):
    from voxfit.server import wyoming as wyoming_tts

    monkeypatch.setattr(wyoming_tts, "MAX_CONNECTIONS", 2)
    voice, _ = toy_voice("toy")
    srv = WyomingOnly([voice])
    try:
        async def go():
            async with srv.client() as a, srv.client() as b:
                for c in (a, b):  # both are being served
                    await c.write_event(Synthesize(text="Hi.").event())
                    assert AudioStart.is_type((await c.read_event()).type)
                async with srv.client() as third:
                    refused = await third.read_event()
                    closed = await third.read_event()
            deadline = time.monotonic() + 10
            while srv.service.connections:  # the server sees the others leave
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            async with srv.client() as again:  # room again
                await again.write_event(Synthesize(text="Hi.").event())
                return refused, closed, await again.read_event()

        refused, closed, served = run(go())
        assert Error.is_type(refused.type) and Error.from_event(refused).code == "too_many_connections"
        assert closed is None and AudioStart.is_type(served.type)
    finally:
        srv.close()
