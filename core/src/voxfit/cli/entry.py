"""The console entry point: every failure a user can cause ends as one ``error: ...`` line and an exit code."""

from __future__ import annotations

import sys

import click

from voxfit.cli.group import main
from voxfit.errors import VoxfitError
from voxfit.util.signals import Terminated, terminate_on_signals
from voxfit.util.stdio import guard_stdout, settle_stdout


def _exit_without_teardown(exit_code: int = 0) -> None:
    """End a run that loaded an engine without the interpreter's teardown.

    Finalising onnxruntime, numpy or torch modules takes ~150 ms, longer than
    synthesizing a short sentence, and can abort the process: a runtime's
    background thread (an ONNX Runtime session giving its memory back when idle)
    still running while the modules are torn down ends in "terminate called
    without an active exception" and SIGABRT instead of the exit code.
    Everything voxfit writes is closed by now (the WAV was moved into place,
    caches were written atomically, a failure's temporary files were removed
    as it unwound), so only the standard streams need flushing.
    """
    if not any(name in sys.modules for name in ("onnxruntime", "torch")):
        return
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def _fail(line: str, exit_code: int) -> None:
    # One line, whatever the message quotes: a newline a user put in a path or a value is shown, not obeyed.
    click.echo(line.replace("\r", "\\r").replace("\n", "\\n"), err=True)
    settle_stdout()
    _exit_without_teardown(exit_code)
    sys.exit(exit_code)


def run() -> None:
    """Console entry point: turn every expected failure into one line and an exit code.

    SIGTERM and SIGHUP unwind like Ctrl-C (:mod:`voxfit.util.signals`), so temporary
    files are removed on the way out; each ends in one line and 128 + signum.
    """
    guard_stdout()
    try:
        with terminate_on_signals():
            main.main(standalone_mode=False)
            sys.stdout.flush()  # a full disk behind `>` fails here, not in the interpreter's teardown
            _exit_without_teardown()
    except VoxfitError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except Terminated as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("error: interrupted", 130)
    except click.ClickException as exc:
        _fail(f"error: {exc.format_message()}", exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        settle_stdout()  # the reader left (`| head`): nothing to say
        sys.exit(1)
