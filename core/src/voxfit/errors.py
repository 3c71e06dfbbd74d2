"""Exceptions with one-line messages meant for the person at the terminal."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception as one line for a person: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class VoxfitError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero, no traceback."""

    exit_code = 1


class UsageError(VoxfitError):
    """The user asked for something that cannot be done (bad option, bad input)."""

    exit_code = 2


class ModelError(VoxfitError):
    """A model is missing, incomplete or corrupt."""


class PluginError(VoxfitError):
    """A plugin failed and strict mode is on."""


class PluginUnavailable(Exception):
    """Raised by a plugin module at import time when an optional dependency is missing.

    The plugin is then listed as "skipped: <message>" instead of "broken".
    """


class EngineLoadError(VoxfitError):
    """An engine could not be loaded for a proposal; the core falls back to the next one."""


class NoFeasiblePlan(VoxfitError):
    """Every proposal was vetoed, or none was made."""


class InvariantViolation(VoxfitError):
    """A loaded engine still carries a training artifact; the core refuses to run it."""
