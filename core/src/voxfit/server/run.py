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
            deadline = time.monotonic() + self.drain_timeout
            while self.state.in_flight() and time.monotonic() < deadline and not self.should_exit:
                time.sleep(0.05)
            left = self.state.in_flight()
            if left:
                self.echo(f"drain: {left} request(s) still running after {self.drain_timeout:g} s: "
                          "stopping them at the next sentence")
                self.state.cancel_all()
                end = time.monotonic() + 5.0
                while self.state.in_flight() and time.monotonic() < end:
                    time.sleep(0.05)
            else:
                self.echo("drained: every request finished")
            self.should_exit = True

    return DrainingServer


def serve(settings: Settings, host_for: Callable[[Settings], Any], *, echo: Callable[[str], None],
          show_plan: Callable[[str, Any], None], ready: Optional[Callable[[str], None]] = None) -> None:
    """Plan every model, check they fit together, load, listen until drained."""
    import uvicorn

    from voxfit.server.app import ServerState, create_app
    from voxfit.server.metrics import ServerMetrics
    from voxfit.server.voices import check_memory, close_voices, load_voices, plan_voices

    if not settings.http and not settings.wyoming:
        raise UsageError("--no-http leaves nothing to serve: add --wyoming tcp://HOST:PORT (VOXFIT_WYOMING)")
    models: list[Optional[str]] = list(settings.models) or [settings.model]
    planned = plan_voices(settings, models, host_for)
    for name, _, _, plan in planned:
        show_plan(name, plan)
    workers = settings.workers_per_engine
    for note in check_memory([(n, p) for n, _, _, p in planned], workers, settings.memory_headroom):
        echo(f"note: {note}")
    # Before loading: a taken port fails in a second, not after a load.
    sock = bind(settings.host, settings.port) if settings.http else None
    wyoming_sock = None
    if settings.wyoming:
        try:
            try:
                from voxfit.server.wyoming import bind as bind_wyoming
            except ImportError as exc:
                raise UsageError(f"--wyoming needs the wyoming package ({exc.name} is missing): "
                                 "pip install 'voxfit[serve]'") from None
            wyoming_sock = bind_wyoming(settings.wyoming)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
    metrics: Optional[ServerMetrics] = None
    state: Optional[ServerState] = None
    voices: list[Any] = []
    try:
        try:
            metrics = ServerMetrics(settings.metrics_log)
        except OSError as exc:
            raise UsageError(f"cannot open --metrics-log {settings.metrics_log}: {exc.strerror or exc}") from None

        def loaded(voice: Any) -> None:
            s = voice.sessions[0]
            echo(f"loaded voice {voice.name}: {s.loaded.proposal.label()}, {len(voice.sessions)} engine(s) "
                 f"({s.load_seconds:.2f} s each), {voice.slots_per_engine} request(s) at once on each" + (f"; aliases {', '.join(voice.aliases)}" if voice.aliases else ""))
            for line in s.report().lines()[1:]:
                echo(line)

        voices = load_voices(planned, workers, dict(settings.voice_aliases), on_loaded=loaded)
        state = ServerState(voices, settings, metrics)
        app = create_app(state)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=int(settings.drain_timeout) + 10, server_header=False)
        server = _server_class()(config, state, settings.drain_timeout, echo)
        logging.getLogger("uvicorn.error").addFilter(_QuietAborts())
        auth = ", API key required" if settings.api_key else ""
        if sock is not None:
            url = url_of(sock)
            if not _loopback(sock) and not settings.api_key:
                echo(f"note: {url} is reachable from other machines and no API key is set (VOXFIT_API_KEY)")
            (ready or echo)(f"listening on {url} (voices: {', '.join(state.order)}; queue {settings.max_queue} "
                            f"per voice, {workers} engine(s) each{auth})")
        if wyoming_sock is not None:
            from voxfit.server.wyoming import uri_of

            (ready or echo)(f"wyoming listening on {uri_of(wyoming_sock)} (voices: {', '.join(state.order)}; "
                            "the same queues as HTTP)")
        sys.stdout.flush()
        if wyoming_sock is None:
            server.run(sockets=[sock])
        else:
            from voxfit.server.wyoming import run_services

            run_services(server, [sock] if sock is not None else [], wyoming_sock, state)
        echo("stopped")
    finally:
        for held in (sock, wyoming_sock):
            if held is not None:
                held.close()
        if state is not None:
            state.close()  # no engine is closed under a running synthesis
        if metrics is not None:
            metrics.close()
        close_voices(voices)
