"""Shared by the serving benchmarks: starting servers on free loopback ports, timing one request."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on loopback; ``url`` once it answers."""

    def __init__(self, name: str, cmd: list[str], env: dict, ready_url: Optional[str] = None,
                 listening: Optional[re.Pattern] = None, timeout: float = 120) -> None:
        self.name = name
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.url = ""
        self.output: list[str] = []
        found = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.output.append(line)
                if listening is not None and not self.url:
                    match = listening.search(line)
                    if match:
                        self.url = match.group(1)
                        found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        if ready_url is not None:
            import httpx

            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(ready_url, timeout=2).status_code < 500:
                        self.url = ready_url.rsplit("/", 1)[0]
                        return
                except httpx.HTTPError:
                    time.sleep(0.2)
        else:
            while time.monotonic() < deadline and self.proc.poll() is None and not found.wait(0.2):
                pass
            if self.url:
                return
        self.stop()
        raise SystemExit(f"{name} did not start:\n" + "\n".join(self.output[-20:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def env_for(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXFIT_")}
    env["VOXFIT_CACHE_DIR"] = str(work / "cache")
    return env


def start_voxfit(work: Path, *args: str) -> Server:
    return Server("voxfit serve", [str(BIN / "voxfit"), "serve", "--port", "0", *args], env_for(work),
                  listening=re.compile(r"listening on (http://\S+)"))


@dataclass
class Result:
    ok: bool
    latency: float = 0.0
    ttfa: float = 0.0
    audio_seconds: float = 0.0
    status: int = 0
    error: str = ""


def wav_seconds(data: bytes) -> float:
    """Seconds in a mono 16-bit WAV (streamed headers hold no sizes: count the bytes after the header)."""
    if len(data) < 44 or data[:4] != b"RIFF":
        return 0.0
    rate = int.from_bytes(data[24:28], "little")
    pos = 12
    while pos + 8 <= len(data):  # walk the chunks to "data"
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if data[pos:pos + 4] == b"data":
            return (len(data) - pos - 8) / 2 / rate
        pos += 8 + size
    return 0.0
