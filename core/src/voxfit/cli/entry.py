"""The console entry point: every failure a user can cause ends as one ``error: ...`` line and an exit code."""

from __future__ import annotations

import sys

import click

from voxfit.cli.group import main
from voxfit.errors import VoxfitError
from voxfit.util.signals import Terminated, terminate_on_signals
from voxfit.util.stdio import guard_stdout, settle_stdout


def _exit_without_teardown() -> None:
    """End a successful run that loaded an engine without the interpreter's teardown.

    Finalising onnxruntime, numpy or torch modules takes ~150 ms, longer than
    synthesizing a short sentence. Everything voxfit writes is closed by now
    (the WAV was moved into place, caches were written atomically), so only
    the standard streams need flushing.
    """
    if not any(name in sys.modules for name in ("onnxruntime", "torch")):
        return
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _fail(line: str, exit_code: int) -> None:
    # One line, whatever the message quotes: a newline a user put in a path or a value is shown, not obeyed.
    click.echo(line.replace("\r", "\\r").replace("\n", "\\n"), err=True)
    settle_stdout()
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
