"""Helpers for the `voxfit serve` tests: a real server process, an in-process server with stand-in engines."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Optional

from helpers import cpu_profile, make_host
from pydantic import BaseModel, ConfigDict, Field, model_validator
from voxfit import hookimpl
from voxfit.engine import AudioChunk, EngineInfo, Pacing
from voxfit.models import ModelSpec, Proposal
from voxfit.settings import Settings

BIN = Path(sys.executable).parent
LISTENING = re.compile(r"^listening on (http://\S+)")
WYOMING_LISTENING = re.compile(r"wyoming listening on tcp://([0-9.]+):(\d+)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXFIT_")}
    # A server here plans once: the suite's own work would otherwise re-plan it mid-test (test_load_follow
    # turns following on).
    env["VOXFIT_REPLAN_WINDOW"] = "0"
    env.update(extra)
    return env


class ServerProcess:
    """`voxfit serve ...` as a user starts it, until it printed the addresses it listens on:
    ``url`` (HTTP) and, with ``want_wyoming``, ``host`` and ``port`` (Wyoming)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, timeout: float = 90,
                 want_http: bool = True, want_wyoming: bool = False, command: Optional[Path] = None) -> None:
        self.log_path = cwd / f"serve-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(command or BIN / "voxfit"), "serve", *args], stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, cwd=cwd)
        self.stdout: list[str] = []
        self.url, self.host, self.port = "", "", 0
        deadline = time.monotonic() + timeout
        found = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.stdout.append(line)
                if (match := LISTENING.search(line)) and not self.url:
                    self.url = match.group(1)
                if match := WYOMING_LISTENING.search(line):
                    self.host, self.port = match.group(1), int(match.group(2))
                if (self.url or not want_http) and (self.port or not want_wyoming):
                    found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        while not found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"voxfit serve did not start: rc={self.proc.returncode}\n{self.log()[-2000:]}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self._log.close()
        return self.proc.returncode


def decode(data: bytes, fmt: str) -> tuple[Any, int]:
    """(samples, rate) of an encoded response, decoded with libsndfile (raw pcm: 24 kHz s16le; AAC: FFmpeg)."""
    import numpy as np
    import soundfile

    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2"), 24000
    if fmt == "aac":
        import av

        with av.open(io.BytesIO(data), format="aac") as container:
            frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
            rate = container.streams.audio[0].sample_rate
        return (np.concatenate(frames) * 32767).astype("<i2"), rate
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    return samples, rate


# -- stand-in engines ---------------------------------------------------------


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    length_scale: Optional[float] = Field(default=None, gt=0, le=10)
    reference_audio: Optional[Path] = None
    reference_text: Optional[str] = None

    @model_validator(mode="after")
    def _text_needs_its_clip(self) -> "ToyOptions":  # the engine's own rule, as a real cloning engine has it
        if self.reference_text is not None and self.reference_audio is None:
            raise ValueError("reference_text needs reference_audio (the clip it transcribes)")
        return self


class ToyEngine:
    """Half a second of a tone per sentence, after ``delay`` seconds; counts what it was asked to say.

    A sentence containing "crash" raises, as a runtime that ran out of memory would.
    """

    sample_rate = 8000

    def __init__(self, backend: str, delay: float) -> None:
        self.backend, self.delay = backend, delay
        self.length_scale = 1.0
        self.spoken: list[str] = []
        self.references: list[tuple[Path, bytes, Optional[str], int]] = []  # path, its bytes, transcript, dir mode

    def configure(self, options: ToyOptions) -> None:
        self.length_scale = options.length_scale or 1.0
        if options.reference_audio is not None:
            path = options.reference_audio
            self.references.append((path, path.read_bytes(), options.reference_text, path.parent.stat().st_mode))

    def synthesize(self, text: str):
        if "crash" in text:
            raise RuntimeError("CUDA out of memory (stand-in)\nsecond line")
        time.sleep(self.delay)
        self.spoken.append(text)
        samples = int(0.5 * self.length_scale * self.sample_rate)
        yield AudioChunk(pcm=(1000).to_bytes(2, "little", signed=True) * samples, sample_rate=self.sample_rate,
                         text=text)

    def inference_modules(self):
        return []

    def close(self) -> None:
        pass


def toy_plugin(name: str, delay: float, engines: list, concurrent: bool = False) -> object:
    module = types.SimpleNamespace(VOXFIT_HOOK_API="2.0")
    backend = f"toy-{name}"

    @hookimpl
    def register_engines(register):
        register(EngineInfo(backend=backend, families=frozenset({"piper"}), options=ToyOptions,
                            pacing=Pacing(length_option="length_scale")))

    @hookimpl
    def default_model():
        return ModelSpec(family="piper", name=name, source="toy plugin", sample_rate=8000)

    @hookimpl
    def score_config():
        return [Proposal(device="cpu", device_family="cpu", engine=backend, score=1.0, reasons=["toy"])]

    @hookimpl
    def load_engine(proposal):
        engine = (ConcurrentToyEngine if concurrent else ToyEngine)(backend, delay)
        engines.append(engine)
        return engine

    module.register_engines, module.default_model = register_engines, default_model
    module.score_config, module.load_engine = score_config, load_engine
    return module


def toy_voice(name: str, delay: float = 0.0, workers: int = 1, concurrent: bool = False) -> tuple[Any, list]:
    """A served voice whose engines are :class:`ToyEngine` (returned too, to look into)."""
    from voxfit.server.voices import Voice
    from voxfit.speaking.session import Session

    engines: list = []
    host = make_host(("toy", toy_plugin(name, delay, engines, concurrent)), defaults=False,
                     allow_plugins=["toy", "test_engines"])
    sessions = [Session(host=host, settings=host.settings, hardware=cpu_profile()) for _ in range(workers)]
    return Voice(name=name, plan=sessions[0].plan, sessions=sessions), engines


class InProcessServer:
    """The app on a real loopback socket, in a thread (uvicorn, as `voxfit serve` runs it)."""

    def __init__(self, voices: list, **settings: Any) -> None:
        import uvicorn
        from voxfit.server.app import ServerState, create_app
        from voxfit.server.metrics import ServerMetrics
        from voxfit.server.sockets import bind, url_of

        self.lines: list[str] = []
        self.state = ServerState(voices, Settings(**settings), ServerMetrics(echo=self.lines.append))
        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock)
        config = uvicorn.Config(create_app(self.state), log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "in-process server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.state.close()
        self.sock.close()

    def __enter__(self) -> "InProcessServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ConcurrentToyEngine(ToyEngine):
    """A ToyEngine that declares ConcurrentSynthesis: options per call, several calls at once."""

    max_concurrent = 2

    def __init__(self, backend: str, delay: float) -> None:
        super().__init__(backend, delay)
        self.active = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def configure(self, options: ToyOptions) -> None:
        self.configured = getattr(self, "configured", 0) + 1  # once, when the session loads it

    def synthesize_with(self, text: str, options: Optional[ToyOptions], *, first: bool = True):
        with self._lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        try:
            time.sleep(self.delay)
            scale = (options.length_scale if options is not None else None) or 1.0
            samples = int(0.5 * scale * self.sample_rate)
            self.spoken.append(text)
        finally:
            with self._lock:
                self.active -= 1
        yield AudioChunk(pcm=(1000).to_bytes(2, "little", signed=True) * samples, sample_rate=self.sample_rate,
                         text=text)
