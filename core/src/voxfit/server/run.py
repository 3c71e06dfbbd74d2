"""Starting and stopping the service: plan, check, load, listen; drain on SIGTERM.

The listening socket is bound before uvicorn starts, so the address printed
("listening on http://...") is the real one (``--port 0`` picks a free port)
and connections made as soon as it is printed wait in the backlog instead of
being refused.

Drain: the first SIGTERM, SIGHUP or SIGINT (the signals ``voxfit.util.signals``
treats as "stop") makes new speech requests and ``/ready`` answer 503, lets
admitted requests finish for up to ``drain_timeout`` seconds, stops the rest at
their next sentence, and exits 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional

from voxfit.errors import UsageError
from voxfit.server.sockets import bind, url_of
from voxfit.settings import Settings
from voxfit.util.signals import TERMINATING


class _QuietAborts(logging.Filter):
    """uvicorn logs an exception out of a response as a crash; a deliberately aborted stream is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        from voxfit.server.app import StreamAborted

        exc = record.exc_info[1] if record.exc_info else None
        for _ in range(8):  # through exception groups (anyio's task group) and chained exceptions
            if exc is None:
                break
            if isinstance(exc, StreamAborted):
                return False
            grouped = getattr(exc, "exceptions", None)
            exc = grouped[0] if grouped else (exc.__cause__ or exc.__context__)
        return True


def _loopback(sock: socket.socket) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    except ValueError:
        return False


def _server_class() -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, with a drain in place of its immediate stop on the first signal."""

        def __init__(self, config: Any, state: Any, drain_timeout: float, echo: Callable[[str], None]) -> None:
            super().__init__(config)
            self.state, self.drain_timeout, self.echo = state, drain_timeout, echo
            self.signalled = 0

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            self.state.follow_load(asyncio.get_running_loop(), self.echo)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own re-raises the signal after shutting down; a drained server exits 0 instead.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = tuple(dict.fromkeys((signal.SIGINT, *TERMINATING)))
            wanted = [s for s in handled if signal.getsignal(s) is not signal.SIG_IGN]
            previous = {s: signal.signal(s, self.on_signal) for s in wanted}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

        def on_signal(self, signum: int, frame: Any) -> None:
            self.signalled += 1
            name = signal.Signals(signum).name
            if self.signalled > 1:
                self.echo(f"{name} again: stopping now")
                self.state.cancel_all()
                self.should_exit = True
                self.force_exit = self.signalled > 2
                return
            self.echo(f"{name}: draining ({self.state.in_flight()} request(s) in flight, up to "
                      f"{self.drain_timeout:g} s); new requests get 503")
            self.state.drain()
            threading.Thread(target=self._drain, name="voxfit-drain", daemon=True).start()

        def _drain(self) -> None:
            _drain(self.state, self.drain_timeout, self.echo, lambda: self.should_exit)
            self.should_exit = True

    return DrainingServer


def _drain(state: Any, timeout: float, echo: Callable[[str], None], stopped: Callable[[], bool]) -> None:
    """Wait up to ``timeout`` for the requests in flight, then stop the rest at their next sentence."""
    deadline = time.monotonic() + timeout
    while state.in_flight() and time.monotonic() < deadline and not stopped():
        time.sleep(0.05)
    left = state.in_flight()
    if not left:
        echo("drained: every request finished")
        return
    echo(f"drain: {left} request(s) still running after {timeout:g} s: stopping them at the next sentence")
    state.cancel_all()
    end = time.monotonic() + 5.0
    while state.in_flight() and time.monotonic() < end:
        time.sleep(0.05)


def serve(settings: Settings, host_for: Callable[[Settings], Any], *, echo: Callable[[str], None],
          show_plan: Callable[[str, Any], None], ready: Optional[Callable[[str], None]] = None) -> None:
    """Plan every model, check they fit together, load, listen until drained."""
    from voxfit.server.voices import check_memory, close_voices, plan_voices

    if not settings.http and not settings.wyoming:
        raise UsageError("--no-http leaves nothing to serve: add --wyoming tcp://HOST:PORT (VOXFIT_WYOMING)")
    planned = plan_voices(settings, list(settings.models) or [settings.model], host_for)
    for name, _, _, plan in planned:
        show_plan(name, plan)
    for note in check_memory([(n, p) for n, _, _, p in planned], settings.workers_per_engine,
                             settings.memory_headroom):
        echo(f"note: {note}")
    sockets = _bind(settings)  # before loading: a taken port fails in a second, not after a load
    held: dict[str, Any] = {"voices": []}
    try:
        held["metrics"] = _metrics(settings)
        held["voices"] = _load(planned, settings, echo)
        _listen(settings, held, sockets, echo, ready or echo)
        echo("stopped")
    finally:
        for sock in sockets:
            if sock is not None:
                sock.close()
        if "state" in held:
            held["state"].close()  # no engine is closed under a running synthesis
        if "metrics" in held:
            held["metrics"].close()
        close_voices(held["voices"])


def _bind(settings: Settings) -> tuple[Optional[socket.socket], Optional[socket.socket]]:
    """The HTTP and the Wyoming listening sockets (either may be None)."""
    sock = bind(settings.host, settings.port) if settings.http else None
    if not settings.wyoming:
        return sock, None
    try:
        try:
            from voxfit.server.wyoming import bind as bind_wyoming
        except ImportError as exc:
            raise UsageError(f"--wyoming needs the wyoming package ({exc.name} is missing): "
                             "pip install 'voxfit[serve]'") from None
        return sock, bind_wyoming(settings.wyoming)
    except BaseException:
        if sock is not None:
            sock.close()
        raise


def _metrics(settings: Settings) -> Any:
    from voxfit.server.metrics import ServerMetrics

    try:
        return ServerMetrics(settings.metrics_log)
    except OSError as exc:
        raise UsageError(f"cannot open --metrics-log {settings.metrics_log}: {exc.strerror or exc}") from None


def _load(planned: list[Any], settings: Settings, echo: Callable[[str], None]) -> list[Any]:
    from voxfit.planning.hardware import describe_memory
    from voxfit.server.voices import fit_concurrency, load_voices

    def loaded(voice: Any) -> None:
        s = voice.sessions[0]
        echo(f"loaded voice {voice.name}: {s.loaded.proposal.label()}, {len(voice.sessions)} engine(s) "
             f"({s.load_seconds:.2f} s each), {voice.slots_per_engine} request(s) at once on each"
             + (f", ~{describe_memory(peak)} at most" if (peak := voice.peak_bytes()) else "")
             + (f"; aliases {', '.join(voice.aliases)}" if voice.aliases else ""))
        for line in s.report().lines()[1:]:
            echo(line)

    voices = load_voices(planned, settings.workers_per_engine, dict(settings.voice_aliases))
    for note in fit_concurrency(voices, settings.memory_headroom):
        echo(f"note: {note}")
    for voice in voices:
        loaded(voice)
    return voices


def _listen(settings: Settings, held: dict[str, Any], sockets: tuple[Any, Any], echo: Callable[[str], None],
            ready: Callable[[str], None]) -> None:
    """Serve until drained (the server's state goes into ``held`` at once, for the caller to close)."""
    import uvicorn

    from voxfit.server.app import ServerState, create_app

    sock, wyoming_sock = sockets
    state = held["state"] = ServerState(held["voices"], settings, held["metrics"])
    config = uvicorn.Config(create_app(state), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=int(settings.drain_timeout) + 10, server_header=False)
    server = _server_class()(config, state, settings.drain_timeout, echo)
    logging.getLogger("uvicorn.error").addFilter(_QuietAborts())
    auth = ", API key required" if settings.api_key else ""
    if sock is not None:
        url = url_of(sock)
        if not _loopback(sock) and not settings.api_key:
            echo(f"note: {url} is reachable from other machines and no API key is set (VOXFIT_API_KEY)")
        ready(f"listening on {url} (voices: {', '.join(state.order)}; queue {settings.max_queue} "
              f"per voice, {settings.workers_per_engine} engine(s) each{auth})")
    if wyoming_sock is None:
        sys.stdout.flush()
        server.run(sockets=[sock])
        return
    from voxfit.server.wyoming import run_services, uri_of

    ready(f"wyoming listening on {uri_of(wyoming_sock)} (voices: {', '.join(state.order)}; the same queues as HTTP)")
    sys.stdout.flush()
    run_services(server, [sock] if sock is not None else [], wyoming_sock, state)
