"""The voxfit command line: one module per command, registered on the group in :mod:`voxfit.cli.group`."""

from voxfit.cli import detect, listing, plan, serve, speak, tune  # noqa: F401  (each registers its commands)
from voxfit.cli.entry import run as run_cli
from voxfit.cli.group import main

run = run_cli  # the console script: voxfit = "voxfit.cli:run"

__all__ = ["main", "run"]
