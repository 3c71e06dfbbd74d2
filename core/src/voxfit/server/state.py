"""What the routes share: the voices, their queues, the limits and the metrics."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Optional

from voxfit.server.encoding import FORMATS, NOT_OFFERED, unavailable
from voxfit.server.errors import ApiError
from voxfit.server.lifecycle import VoiceTotals
from voxfit.server.metrics import ServerMetrics
from voxfit.server.pool import Job, VoicePool, Worker
from voxfit.server.redact import public
from voxfit.server.voices import OPENAI_VOICES, Voice
from voxfit.settings import Settings
from voxfit.speaking.text import controls_to_spaces, has_speakable

# -- server state -------------------------------------------------------------


class ServerState:
    """Everything the routes share: voices, their pools, limits, metrics."""

    def __init__(self, voices: list[Voice], settings: Settings, metrics: ServerMetrics,
                 system_host: Any = None) -> None:
        self.voices = {v.name: v for v in voices}
        self.order = [v.name for v in voices]
        self.settings = settings
        self.metrics = metrics
        self.aliases = dict(settings.voice_aliases)
        for voice in voices:
            for alias in voice.aliases:
                self.aliases.setdefault(alias, voice.name)
        # Code written for OpenAI sends its voice names (Open WebUI's default is alloy): each one
        # not configured otherwise speaks as the default voice.
        self.openai_aliases = [n for n in OPENAI_VOICES if n not in self.aliases and n not in self.voices]
        self.aliases.update({name: self.order[0] for name in self.openai_aliases})
        self.pools = {v.name: VoicePool(v.name, _workers(v), settings.max_queue) for v in voices}
        for pool in self.pools.values():
            metrics.watch_pool(pool)
        self.draining = False
        self.started = int(time.time())
        self.formats_missing = {**NOT_OFFERED, **unavailable()}
        self.totals = {v.name: VoiceTotals() for v in voices}  # what each voice has spoken, for estimates
        self.jobs: dict[str, Job] = {}  # admitted and not yet recorded, for the drain's bound
        self.admitted = 0  # requests admitted since start (the load follower judges idle windows only)
        self.system_host = system_host if system_host is not None else voices[0].sessions[0].host
        self.json_cap = max(64 * 1024, settings.max_input_chars * 8)  # the largest JSON body a route reads
        self._sampler: Any = None
        self.follower: Any = None  # a LoadFollower once the server runs (VOXFIT_REPLAN_WINDOW > 0)

    def follow_load(self, loop: Any, echo: Any) -> None:
        """Start re-planning voices whose plan's CPU load is no longer the machine's (see follow.py)."""
        if self.settings.replan_window > 0 and self.follower is None:
            from voxfit.server.follow import LoadFollower

            self.follower = LoadFollower(self, self.settings.replan_window, loop, echo)
            self.follower.start()

    def shown(self, data: Any) -> Any:
        """``data`` as a client may read it: whole with an API key, else with names for paths and the host's."""
        return data if self.settings.api_key else public(data)

    def drain(self) -> None:
        self.draining = True
        if self.follower is not None:
            self.follower.halt()
        for pool in self.pools.values():
            pool.draining = True

    def in_flight(self) -> int:
        return sum(p.busy + p.waiting for p in self.pools.values())

    def cancel_all(self) -> None:
        """Stop every running job at its next sentence (the drain's bound has passed)."""
        for job in list(self.jobs.values()):
            job.stopped = True
            job.cancel.set()
            if job.gone is not None and job.loop is not None:
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(job.gone.set)

    def close(self) -> None:
        """Stop every job at its next sentence and wait for the workers, before the engines are closed."""
        self.cancel_all()
        if self.follower is not None:
            self.follower.stop()
        for pool in self.pools.values():
            for worker in pool.workers:
                worker.executor.shutdown(wait=True, cancel_futures=True)
            pool.close_retired_now()

    def voice(self, name: Optional[str]) -> Voice:
        if name is None:
            return self.voices[self.order[0]]
        target = self.aliases.get(name, name)
        if target in self.voices:
            return self.voices[target]
        named = {a: t for a, t in self.aliases.items() if a not in self.openai_aliases}
        aliases = f" (aliases: {', '.join(f'{a}={t}' for a, t in sorted(named.items()))})" if named else ""
        raise ApiError(400, f"unknown voice {name!r}: this server offers {', '.join(self.order)}{aliases}",
                       param="voice", code="voice_not_found")

    def format(self, name: str, param: str) -> Any:
        key = name.strip().lower()
        if key in FORMATS and key not in self.formats_missing:
            return FORMATS[key]
        offered = ", ".join(f for f in FORMATS if f not in self.formats_missing)
        why = self.formats_missing.get(key, f"unknown format {name!r}")
        raise ApiError(400, f"{why}; formats offered: {offered}", param=param, code="unsupported_format")

    def sampler(self) -> Any:
        if self._sampler is None:
            from voxfit.server.system import SystemSampler

            self._sampler = SystemSampler(self.system_host)
        return self._sampler

    def check_text(self, text: str, param: str) -> str:
        limit = self.settings.max_input_chars
        if len(text) > limit:
            raise ApiError(400, f"{param} is {len(text)} characters; this server takes at most {limit} per request "
                           "(VOXFIT_MAX_INPUT_CHARS)", param=param, code="input_too_long")
        if not text.strip():
            raise ApiError(400, f"{param} is empty: nothing to say", param=param)
        text = controls_to_spaces(text)
        if not has_speakable(text):
            raise ApiError(400, f"{param} has nothing speakable in it (no letters or digits)", param=param)
        return text


def _workers(voice: Voice) -> list[Worker]:
    """One worker per session, or ``max_concurrent`` sharing it when its engine speaks concurrently."""
    workers: list[Worker] = []
    for session in voice.sessions:
        for _ in range(voice.slots_per_engine):
            workers.append(Worker(voice.name, len(workers), session))
    return workers
