"""Termination signals end a run the way Ctrl-C does: by an exception that unwinds.

By default SIGTERM and SIGHUP kill the process on the spot, so no ``finally``
runs: the temporary WAV beside the target and a half-written cache file stay
behind. :func:`terminate_on_signals` turns them into :class:`Terminated`, which
unwinds the stack like ``KeyboardInterrupt`` does, so every writer removes its
temporary file; the entry point then reports one line and exits 128 + signum.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: Signals that ask a process to stop (SIGINT already raises KeyboardInterrupt).
TERMINATING = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(BaseException):
    """A termination signal arrived. A BaseException, like KeyboardInterrupt, so
    ``except Exception`` blocks do not swallow it while clean-up code still runs."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"terminated ({self.signal_name})")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


@contextlib.contextmanager
def terminate_on_signals(signums: tuple[int, ...] = TERMINATING) -> Iterator[None]:
    """Within the block, the given signals raise :class:`Terminated` in the main thread.

    Only the first signal raises: a second SIGTERM arriving while the first one's
    clean-up runs must not cut that clean-up short. Signals already ignored are
    left alone. Previous handlers come back on exit.
    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise Terminated(signum)

    # A signal the parent set to be ignored stays ignored: `nohup voxfit run ...` must survive the hangup.
    wanted = [signum for signum in signums if signal.getsignal(signum) is not signal.SIG_IGN]
    previous = {signum: signal.signal(signum, handler) for signum in wanted}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
