"""A long-running server follows the CPU load instead of keeping the moment it started in.

A plan reads how busy the CPU is with other processes (a thread count that is
right on a quiet machine is wrong on a busy one), but a server outlives that
moment: started while the machine was booting its services, it would keep one
thread for its whole life. :class:`LoadFollower` measures other processes'
load every ``interval`` seconds (this process's own work does not count) and,
when a voice's plan was made for a different load (:meth:`CpuLoad.coarse`)
for ``window`` seconds on end, re-plans that voice with the load it saw. Only
moments when the server is idle are judged: while it speaks, its own clients
and the kernel's work for them (loopback networking) read as other processes'
load, so a measurement with a request in it starts the window again. A server
that is never idle for a window keeps its plan. A
plan that chooses the same thing only replaces the old one (its reasons then
describe now); one that chooses differently is loaded beside the running
engines, then swapped in: requests already running finish on the old engines,
which are closed after them. ``/v1/plan`` shows what was seen and done.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from voxfit.errors import one_line
from voxfit.planning import cpu_load
from voxfit.planning.cpu_load import CpuLoad

#: Most recent re-plans kept for /v1/plan.
HISTORY = 10


@dataclass(frozen=True)
class Replan:
    """One re-plan of a voice: when, what ran before and after, and why."""

    at: float  # Unix time
    voice: str
    was: str
    now: str
    swapped: bool  # False: the same choice, only the plan's reasons renewed (or the re-plan failed)
    why: str


def _choice(plan: Any) -> Any:
    chosen = plan.chosen
    return None if chosen is None else chosen.model_dump(
        mode="json", include={"plugin", "device", "engine", "precision", "quantization", "compile", "threads",
                              "options"})


class LoadFollower:
    """Re-plans the server's voices when other processes' CPU load has changed for ``window`` seconds."""

    def __init__(self, state: Any, window: float, loop: asyncio.AbstractEventLoop,
                 echo: Callable[[str], None], interval: float = 2.0) -> None:
        self.state, self.window, self.loop, self.echo = state, window, loop, echo
        self.interval = min(interval, max(window / 3, 0.5))
        self.now: Optional[CpuLoad] = None
        self.history: list[Replan] = []
        self._since: dict[str, float] = {}  # voice -> when its plan's load and the seen one began to differ
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voxfit-load-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Re-plan no more (the server drains); what is being loaded is closed, not swapped in."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # -- deciding ---------------------------------------------------------------

    def due(self, load: CpuLoad, at: float) -> list[str]:
        """The voices whose plan was made for another load than ``load``, for ``window`` seconds by ``at``."""
        out = []
        for name, voice in self.state.voices.items():
            planned = CpuLoad.from_flags(voice.plan.hardware.flags)
            if planned is None or planned.coarse() == load.coarse():
                self._since.pop(name, None)
                continue
            since = self._since.setdefault(name, at)
            if at - since >= self.window:
                out.append(name)
        return out

    def _busy_marker(self) -> tuple[int, int]:
        return self.state.admitted, self.state.in_flight()

    def _run(self) -> None:
        start, marker = cpu_load.read_times(), self._busy_marker()
        while start is not None and not self._stop.wait(self.interval):
            end, before, marker = cpu_load.read_times(), marker, self._busy_marker()
            if end is None:
                return
            self.now, start = cpu_load.between(start, end), end
            if marker != before or marker[1]:  # a request ran: its clients' work is not other processes' load
                self._since.clear()
                continue
            for name in self.due(self.now, time.monotonic()):
                if self._stop.is_set():
                    return
                self._replan(name, self.now)
                self._since.pop(name, None)

    # -- acting -----------------------------------------------------------------

    def _replan(self, name: str, load: CpuLoad) -> None:
        from voxfit.planning.planner import detect, make_plan

        voice = self.state.voices[name]
        host = voice.sessions[0].host
        was = voice.plan.chosen.label() if voice.plan.chosen else "nothing"
        why = f"CPU load changed for {self.window:g} s: {load.describe()}"
        try:
            cpu_load.observe(load)  # the plan reads the load this window saw, not a fresh 50 ms glance
            plan = make_plan(host, hardware=detect(host))
            if plan.chosen is None or _choice(plan) == _choice(voice.plan):
                voice.plan = plan if plan.chosen is not None else voice.plan
                self._record(Replan(time.time(), name, was, was, False, why))
                return
            sessions = self._load(voice, host, plan)
            if self._stop.is_set():
                for session in sessions:
                    session.close()
                return
        except Exception as exc:  # noqa: BLE001 - the running engines keep serving
            self._record(Replan(time.time(), name, was, was, False, f"{why}; re-plan failed: {one_line(exc)}"))
            return
        asyncio.run_coroutine_threadsafe(self._swap(voice, plan, sessions), self.loop).result(timeout=60)
        self._record(Replan(time.time(), name, was, plan.chosen.label(), True, why))

    @staticmethod
    def _load(voice: Any, host: Any, plan: Any) -> list[Any]:
        from voxfit.speaking.session import Session

        sessions: list[Any] = []
        try:
            for _ in voice.sessions:
                sessions.append(Session(settings=host.settings, host=host, plan=plan))
        except BaseException:
            for session in sessions:
                session.close()
            raise
        return sessions

    async def _swap(self, voice: Any, plan: Any, sessions: list[Any]) -> None:
        pool = self.state.pools[voice.name]
        pool.swap({id(old): new for old, new in zip(voice.sessions, sessions, strict=True)},
                  close=lambda session: session.close())
        voice.sessions[:] = sessions
        voice.plan = plan

    def _record(self, event: Replan) -> None:
        self.history = [*self.history, event][-HISTORY:]
        self.echo(f"voice {event.voice}: re-planned, {event.why}: "
                  + (f"{event.was} -> {event.now}" if event.swapped else f"kept {event.was}"))

    def as_dict(self) -> dict[str, Any]:
        """What ``/v1/plan`` shows: the setting, the load seen last, and the recent re-plans."""
        return {
            "window_seconds": self.window,
            "load_now": self.now.describe() if self.now else None,
            "load_now_coarse": list(self.now.coarse()) if self.now else None,
            "replans": [asdict(r) for r in self.history],
        }
