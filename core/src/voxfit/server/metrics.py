"""What the server measured: Prometheus metrics (``/metrics``) and one JSON line per request (``--metrics-log``).

The numbers come from the session's :class:`~voxfit.speaking.synthesis.Metrics` (audio
seconds, time to first audio, RTF, peak RSS, what the engine measured itself
such as GPU use during synthesis); the server adds only what is its own:
queue wait, status, and the time the whole request took.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from voxfit.server.pool import Job

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_RTF = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServerMetrics:
    def __init__(self, log_path: Optional[Path] = None, echo: Callable[[str], None] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("voxfit_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.speech = Counter("voxfit_speech_requests", "Speech requests by route (an HTTP path or wyoming), voice "
                              "and outcome (ok, cancelled, timeout, engine_error, bad_input, rejected, error)",
                              ["route", "voice", "outcome"], registry=r)
        self.rejected = Counter("voxfit_rejected_requests", "Requests turned away at admission, by reason",
                                ["voice", "reason"], registry=r)
        self.queue_depth = Gauge("voxfit_queue_depth", "Requests waiting for a worker", ["voice"], registry=r)
        self.in_flight = Gauge("voxfit_in_flight", "Requests being synthesized", ["voice"], registry=r)
        self.workers_up = Gauge("voxfit_workers_up", "Workers (loaded engines) in service", ["voice"], registry=r)
        self.latency = Histogram("voxfit_request_seconds", "Arrival to last audio byte, queue included", ["voice"],
                                 buckets=_LATENCY, registry=r)
        self.queue_wait = Histogram("voxfit_queue_wait_seconds", "Time waiting for a worker", ["voice"],
                                    buckets=_LATENCY, registry=r)
        self.ttfa = Histogram("voxfit_time_to_first_audio_seconds", "Arrival to first audio, queue included",
                              ["voice"], buckets=_LATENCY, registry=r)
        self.rtf = Histogram("voxfit_rtf", "Synthesis time / audio duration per request", ["voice"], buckets=_RTF,
                             registry=r)
        self.audio = Counter("voxfit_audio_seconds", "Seconds of audio produced", ["voice"], registry=r)
        self.log_path = log_path
        self._lock = threading.Lock()
        self._log = None
        if log_path is not None:
            self._log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)  # /v1/requests/recent

    def watch_pool(self, pool: Any) -> None:
        """Queue depth, in-flight and live workers are read from the pool when scraped."""
        self.queue_depth.labels(pool.voice).set_function(lambda: pool.waiting)
        self.in_flight.labels(pool.voice).set_function(lambda: pool.busy)
        self.workers_up.labels(pool.voice).set_function(lambda: len(pool.live))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def rejected_request(self, voice: str, reason: str) -> None:
        self.rejected.labels(voice, reason).inc()

    def finish(self, job: Job, status: int, route: str, error: str = "") -> dict[str, Any]:
        """Record one speech request's end: metrics, the JSON line, the log line. Returns the record."""
        m = job.metrics
        total = (job.finished or time.perf_counter()) - job.arrived
        gpu = m.engine.get("gpu_util_mean_percent") if m.engine else None
        batch = m.engine.get("batch") if m.engine else None  # an engine that decodes requests together
        record = {
            "id": job.id, "time": time.time(), "route": route, "voice": job.voice, "status": job.outcome,
            "http_status": status, "characters": len(job.text), "audio_seconds": round(m.audio_seconds, 4),
            "queue_wait_seconds": _round(job.queue_wait), "time_to_first_audio_seconds":
            _round(m.time_to_first_audio_seconds), "total_seconds": round(total, 4), "rtf": _round(m.rtf),
            "peak_rss_bytes": m.peak_rss_bytes, "gpu_util_percent": gpu, "worker": job.worker or None,
            "batch": batch,
        }
        if error:
            record["error"] = error
        self.speech.labels(route, job.voice, job.outcome).inc()
        if job.outcome == "ok":
            self.latency.labels(job.voice).observe(total)
            if m.rtf is not None:
                self.rtf.labels(job.voice).observe(m.rtf)
        if job.queue_wait is not None:
            self.queue_wait.labels(job.voice).observe(job.queue_wait)
        if m.time_to_first_audio_seconds is not None:
            self.ttfa.labels(job.voice).observe(m.time_to_first_audio_seconds)
        if m.audio_seconds:
            self.audio.labels(job.voice).inc(m.audio_seconds)
        line = (f"{job.id} {route} voice={job.voice} {job.outcome} {status} chars={len(job.text)} "
                f"audio={m.audio_seconds:.2f}s total={total:.3f}s"
                + (f" queue={job.queue_wait:.3f}s" if job.queue_wait is not None else "")
                + (f": {error}" if error else ""))
        with self._lock:
            if self._log is not None:
                self._log.write(json.dumps(record) + "\n")
            self.recent.append(record)
            self.echo(line)
        return record

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)
