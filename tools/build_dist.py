"""Build an sdist and a wheel of the core and of every plugin into one folder, then check their metadata.

    python tools/build_dist.py [OUTDIR]      (``make dist``: OUTDIR is dist/)

Builds run without network isolation, with the hatchling of the running
environment, so that they take seconds and need no index. Each wheel is built
from its sdist, as pip would build it from PyPI, so a file the sdist leaves out
fails here. ``twine check --strict`` then reads every file's metadata and long
description as PyPI would render it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = ("core", "plugins/cuda", "plugins/mps", "plugins/cpu_onnx", "plugins/wsl")


def build(outdir: Path) -> list[Path]:
    """Every distribution file of the project, freshly built into ``outdir`` (emptied first)."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    for project in PROJECTS:
        done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                               str(outdir), str(ROOT / project)], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"building {project} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    files = sorted(outdir.iterdir())
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)], check=True, timeout=120)
    return files


if __name__ == "__main__":
    built = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist")
    print(f"{len(built)} files in {built[0].parent}")
