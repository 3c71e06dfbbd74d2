"""How busy the CPU is right now with other processes, read from ``/proc`` (no framework, no psutil).

A thread count that is right on a quiet machine is wrong on a busy one: with
another process holding one of two cores, one ONNX Runtime thread ran faster
than two. What counts is the CPU time *other* processes used over a short
window: the busy ticks of ``/proc/stat`` minus this process's own
(``/proc/self/stat``). The window starts at :func:`mark` (the CLI calls it
first thing, so the interpreter's start-up is the window and nobody waits) or,
without a mark, is a short sleep. The load average, the runnable count and
CPU pressure (``/proc/pressure/cpu``, PSI) are read too, and shown as what
was seen. ``root`` lets tests hand in a fake ``/proc``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

#: Shortest window worth judging: /proc/stat counts in 10 ms ticks per CPU (5+ ticks per CPU).
MIN_WINDOW_SECONDS = 0.05
#: Other processes using at least this much of a CPU, or this much CPU pressure, contend with ours.
#: A mark older than this says little about now (a long-lived process): a fresh window is taken instead.
MAX_WINDOW_SECONDS = 2.0
CONTENDED_BUSY = 0.25
CONTENDED_PRESSURE = 10.0

_FLAG_PREFIX = "cpu_load_"


@dataclass(frozen=True)
class CpuTimes:
    busy_ticks: int
    total_ticks: int
    own_ticks: int
    logical_cpus: int
    at: float


@dataclass(frozen=True)
class CpuLoad:
    """What other processes were doing on the CPU when the plan was made."""

    busy_by_others: Optional[float]  # logical CPUs' worth of time other processes used over the window
    window_seconds: float = 0.0
    loadavg_1m: Optional[float] = None
    runnable_others: Optional[int] = None  # runnable tasks right now, this one excluded
    pressure_some_avg10: Optional[float] = None  # % of the last 10 s some task waited for a CPU

    @property
    def others(self) -> float:
        """Cores other processes take: measured over the window, else the load average."""
        if self.busy_by_others is not None:
            return self.busy_by_others
        return self.loadavg_1m or 0.0

    @property
    def cores_taken(self) -> int:
        """Whole cores other processes take: one counts once they use half of it."""
        return math.floor(self.others + 0.5)

    @property
    def contended(self) -> bool:
        return self.others >= CONTENDED_BUSY or (self.pressure_some_avg10 or 0.0) >= CONTENDED_PRESSURE

    def coarse(self) -> tuple[int, bool]:
        """What a plan depends on: whole cores taken (more than leave one free all end in one thread),
        and whether contended. Two loads with the same coarse value make the same plan."""
        from voxfit.planning.cpu_affinity import usable_count

        return min(self.cores_taken, max(1, (usable_count() or 2) - 1)), self.contended

    def describe(self) -> str:
        parts = []
        if self.busy_by_others is not None:
            parts.append(f"other processes used {self.busy_by_others:.1f} CPUs over the last {self.window_seconds:.2f} s")
        if self.runnable_others is not None:
            parts.append(f"{self.runnable_others} other runnable now")
        if self.loadavg_1m is not None:
            parts.append(f"load average {self.loadavg_1m:.2f}")
        if self.pressure_some_avg10 is not None:
            parts.append(f"CPU pressure {self.pressure_some_avg10:.0f}% (PSI some, 10 s)")
        return ", ".join(parts) or "no load information"

    def as_flags(self) -> dict[str, float]:
        """As hardware-profile flags (JSON scalars), so a saved profile carries the snapshot."""
        values = {"busy_by_others": self.busy_by_others, "window_seconds": self.window_seconds,
                  "loadavg_1m": self.loadavg_1m, "runnable_others": self.runnable_others,
                  "pressure_some_avg10": self.pressure_some_avg10}
        return {_FLAG_PREFIX + k: round(v, 3) for k, v in values.items() if v is not None}

    @classmethod
    def from_flags(cls, flags: dict) -> Optional["CpuLoad"]:
        if not any(str(k).startswith(_FLAG_PREFIX) for k in flags):
            return None

        def num(name: str) -> Optional[float]:
            value = flags.get(_FLAG_PREFIX + name)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        runnable = num("runnable_others")
        return cls(num("busy_by_others"), num("window_seconds") or 0.0, num("loadavg_1m"),
                   int(runnable) if runnable is not None else None, num("pressure_some_avg10"))


def without_load(flags: dict) -> dict:
    """Profile flags with the load snapshot removed (``voxfit tune`` measures the machine as built)."""
    return {k: v for k, v in flags.items() if not str(k).startswith(_FLAG_PREFIX)}


def _read(root: Path, name: str) -> Optional[str]:
    try:
        return (root / name).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def read_times(root: Path = Path("/"), clock: Callable[[], float] = time.monotonic) -> Optional[CpuTimes]:
    stat, own = _read(root, "proc/stat"), _read(root, "proc/self/stat")
    if not stat or not own:
        return None
    try:
        lines = stat.splitlines()
        fields = [int(x) for x in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
        fields += [0] * (8 - len(fields))
        idle = fields[3] + fields[4]
        cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
        after_comm = own.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
        own_ticks = int(after_comm[11]) + int(after_comm[12])  # utime, stime (fields 14 and 15)
    except (IndexError, ValueError):
        return None
    return CpuTimes(sum(fields) - idle, sum(fields), own_ticks, max(cpus, 1), clock())


_marked: Optional[tuple[Path, CpuTimes]] = None


def mark(root: Path = Path("/"), clock: Callable[[], float] = time.monotonic) -> None:
    """Start the measuring window now (cheap: two small reads)."""
    global _marked
    times = read_times(root, clock)
    _marked = (root, times) if times is not None else None


def _loadavg(root: Path) -> tuple[Optional[float], Optional[int]]:
    text = _read(root, "proc/loadavg")
    if text is None:
        if root != Path("/"):
            return None, None
        try:  # no /proc (macOS): the load average is all there is
            return os.getloadavg()[0], None
        except (OSError, AttributeError):
            return None, None
    try:
        parts = text.split()
        running = int(parts[3].split("/")[0])
        return float(parts[0]), max(0, running - 1)  # this process is one of the running
    except (IndexError, ValueError):
        return None, None


def _pressure(root: Path) -> Optional[float]:
    text = _read(root, "proc/pressure/cpu")
    for line in (text or "").splitlines():
        if line.startswith("some"):
            for item in line.split():
                if item.startswith("avg10="):
                    try:
                        return float(item[6:])
                    except ValueError:
                        return None
    return None


_last: Optional[tuple[float, CpuLoad]] = None


def snapshot(max_age: float = 2.0) -> CpuLoad:
    """:func:`probe` of this machine, shared within ``max_age`` seconds: the plan cache's key and the
    plugins' detect hook must judge the same snapshot."""
    global _last
    now = time.monotonic()
    if _last is None or now - _last[0] > max_age:
        _last = (now, probe())
    return _last[1]


def probe(
    root: Path = Path("/"),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    min_window: float = MIN_WINDOW_SECONDS,
) -> CpuLoad:
    """The load other processes put on the CPU, over the window since :func:`mark` (at least ``min_window``)."""
    start = _marked[1] if _marked is not None and _marked[0] == root else None
    if start is None or clock() - start.at > MAX_WINDOW_SECONDS:
        start = read_times(root, clock)
    busy = None
    window = 0.0
    if start is not None:
        waited = clock() - start.at
        if waited < min_window:
            sleep(min_window - waited)
        end = read_times(root, clock)
        if end is not None:
            return between(start, end, root)
    loadavg, runnable = _loadavg(root)
    return CpuLoad(busy, window, loadavg, runnable, _pressure(root))


def between(start: CpuTimes, end: CpuTimes, root: Path = Path("/")) -> CpuLoad:
    """The load other processes put on the CPU from ``start`` to ``end`` (two :func:`read_times`)."""
    busy, window = None, 0.0
    if end.total_ticks > start.total_ticks:
        share = (end.busy_ticks - start.busy_ticks - (end.own_ticks - start.own_ticks)) / (
            end.total_ticks - start.total_ticks)
        busy = max(0.0, share * end.logical_cpus)
        window = end.at - start.at
    loadavg, runnable = _loadavg(root)
    return CpuLoad(busy, window, loadavg, runnable, _pressure(root))


def observe(load: CpuLoad) -> None:
    """Make ``load`` the snapshot that plans read next (a long-running process that watched the load
    over a longer window than a plan's own probe would take)."""
    global _last
    _last = (time.monotonic(), load)
