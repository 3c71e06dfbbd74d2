"""GPU utilisation and memory, sampled through NVML while the engine synthesizes.

docs/field-notes.md: utilisation read after synthesis is always 0%. The sampler runs
in a background thread that starts before the engine is asked for audio and
stops as soon as the engine's generator is exhausted (or abandoned), so every
sample falls inside synthesis.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Iterator, Optional

from voxfit.sdk import AudioChunk, ConcurrentSynthesis, Configurable, HasNotes, ReportsMetrics, UsageError


class GpuSampler:
    """Polls one GPU (by UUID, else by NVML index) every ``interval`` seconds between start() and stop()."""

    def __init__(self, nvml: Any, uuid: str = "", nvml_index: int = 0, interval: float = 0.05) -> None:
        self.nvml, self.uuid, self.nvml_index, self.interval = nvml, uuid, nvml_index, interval
        self.utilization: list[float] = []
        self.memory_used: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._handle: Any = None

    def _open(self) -> bool:
        try:
            self.nvml.nvmlInit()  # reference counted by NVML: safe alongside other users
            if self.uuid:
                self._handle = self.nvml.nvmlDeviceGetHandleByUUID(self.uuid)
            else:
                self._handle = self.nvml.nvmlDeviceGetHandleByIndex(self.nvml_index)
            return True
        except Exception as exc:
            self.errors.append(f"NVML unavailable for sampling: {exc}")
            return False

    def _sample(self) -> None:
        try:
            self.utilization.append(float(self.nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
        except Exception:
            pass  # MIG instances and some vGPUs report no utilisation; memory still counts
        try:
            self.memory_used.append(int(self.nvml.nvmlDeviceGetMemoryInfo(self._handle).used))
        except Exception as exc:
            if not self.errors:
                self.errors.append(f"memory sampling failed: {exc}")

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        if self._thread is not None or not self._open():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="voxfit-cuda-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gpu_samples": max(len(self.utilization), len(self.memory_used)),
                               "gpu_sample_interval_s": self.interval}
        if self.utilization:
            out["gpu_util_mean_percent"] = round(sum(self.utilization) / len(self.utilization), 1)
            out["gpu_util_max_percent"] = max(self.utilization)
        if self.memory_used:
            out["gpu_mem_used_peak_bytes"] = max(self.memory_used)
        if self.errors:
            out["gpu_sampling_error"] = self.errors[0]
        return out


class SampledEngine:
    """An engine whose every ``synthesize`` call is watched by a :class:`GpuSampler`.

    Samples accumulate over the engine's lifetime; ``metrics()`` summarises
    all of them (the core merges it into the run's metrics).
    """

    def __init__(self, inner: Any, sampler: GpuSampler) -> None:
        self.inner = inner
        self.sampler = sampler
        self.backend: str = inner.backend
        self.sample_rate: int = inner.sample_rate
        self._watching = 0  # syntheses running now: the sampler runs while any does
        self._lock = threading.Lock()

    @property
    def max_concurrent(self) -> int:
        """The inner engine's batch: requests decoded at once (1 for an engine that is not batched)."""
        return int(self.inner.max_concurrent) if isinstance(self.inner, ConcurrentSynthesis) else 1

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        return self._watched(lambda: self.inner.synthesize(text))

    def synthesize_with(self, text: str, options: Any, *, first: bool = True) -> Iterator[AudioChunk]:
        if not isinstance(self.inner, ConcurrentSynthesis):  # one request at a time (max_concurrent is 1)
            if options is not None:
                self.configure(options)
            return self.synthesize(text)
        return self._watched(lambda: self.inner.synthesize_with(text, options, first=first))

    def _watched(self, make: Any) -> Iterator[AudioChunk]:
        with self._lock:
            self._watching += 1
            if self._watching == 1:
                self.sampler.start()
        try:
            yield from make()
        finally:
            with self._lock:
                self._watching -= 1
                if self._watching == 0:
                    self.sampler.stop()

    def metrics(self) -> dict[str, Any]:
        out = {}
        if isinstance(self.inner, ReportsMetrics):
            out.update(self.inner.metrics() or {})
        out.update(self.sampler.metrics())
        return out

    def inference_modules(self) -> Iterable[Any]:
        return self.inner.inference_modules()

    def close(self) -> None:
        self.sampler.stop()
        self.inner.close()

    # Exactly the capabilities it forwards, declared: an engine that configures voice options and keeps notes.
    # Nothing else of the inner engine shows through, so no capability check passes that it does not meet.

    def configure(self, options: Any) -> None:
        if not isinstance(self.inner, Configurable):
            raise UsageError(f"engine {self.backend} takes no voice options")
        self.inner.configure(options)

    @property
    def notes(self) -> list[str]:
        return list(self.inner.notes) if isinstance(self.inner, HasNotes) else []
