"""Standard output that fails in one line: ``voxfit ... > /dev/full`` or a vanished reader.

Writing a summary or JSON to stdout is the last thing a command does; when the
disk behind ``>`` is full, the write (or the flush at exit) raises ``OSError``
far from any code that knows it is stdout. :func:`guard_stdout` wraps
``sys.stdout`` so that such a failure is an :class:`OutputFailed` naming it.
A ``BrokenPipeError`` stays what it is: a reader that stopped listening
(``| head``) is not an error worth a message.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO

from voxfit.errors import VoxfitError


class OutputFailed(VoxfitError):
    """Writing to standard output failed (a full disk, an I/O error)."""


class _GuardedStream:
    """A text stream whose ``write``/``flush`` report an OSError as :class:`OutputFailed`."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def _failed(self, exc: OSError) -> OutputFailed:
        return OutputFailed(f"cannot write to {self._name}: {exc.strerror or exc}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str) -> Any:  # buffer, fileno, isatty, encoding...
        return getattr(self._stream, name)


def guard_stdout() -> None:
    """Wrap ``sys.stdout`` (once) so that its write errors are one-line :class:`OutputFailed` errors."""
    if sys.stdout is not None and not isinstance(sys.stdout, _GuardedStream):
        sys.stdout = _GuardedStream(sys.stdout, "standard output")  # type: ignore[assignment]


def settle_stdout() -> None:
    """Before exiting on an error: if stdout cannot take what is still buffered,
    point it at /dev/null, so the interpreter's own final flush prints no traceback."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, OutputFailed):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
