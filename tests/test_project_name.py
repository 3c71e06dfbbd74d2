"""The project has one name: the one it was developed under survives only in the changelog."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_NAME = "tts" + "fw"  # spelled apart so that this file does not match itself
CHANGELOG = "CHANGELOG.md"


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_old_name_is_in_no_path():
    assert [name for name in _tracked_files() if OLD_NAME in name.lower()] == []


def test_old_name_is_in_no_file_but_one_changelog_line():
    hits = []
    for name in _tracked_files():
        data = (ROOT / name).read_bytes()
        if b"\0" in data[:8192]:
            continue  # images and other binaries
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if OLD_NAME in line.lower():
                hits.append(f"{name}:{number}")
    in_changelog = [hit for hit in hits if hit.startswith(CHANGELOG + ":")]
    assert [hit for hit in hits if hit not in in_changelog] == []
    assert len(in_changelog) == 1, "the rename is one changelog line"


def test_no_issue_number_outside_the_changelog():
    # Docs, code, tests and benchmarks say what is, not which ticket asked for it.
    import re

    pattern = re.compile(r"\bissues? #?\d+", re.IGNORECASE)
    found = []
    for name in _tracked_files():
        if name == CHANGELOG:
            continue
        data = (ROOT / name).read_bytes()
        if b"\0" in data[:8192]:
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == []
