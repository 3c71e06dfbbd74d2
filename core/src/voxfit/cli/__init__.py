"""The voxfit command line."""

from voxfit.cli.main import main, run

__all__ = ["main", "run"]
