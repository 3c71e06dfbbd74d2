"""The docs site builds with mkdocs --strict (broken links and missing pages fail), and says what the code has."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO
from voxfit.settings import Settings


def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "writing-a-plugin" / "index.html").exists()


def test_every_setting_is_documented():
    page = (REPO / "docs" / "settings.md").read_text()
    missing = [name for name in Settings.model_fields if f"`VOXFIT_{name.upper()}`" not in page]
    assert missing == []


def test_the_readme_is_short_and_starts_with_the_two_commands():
    readme = (REPO / "README.md").read_text().splitlines()
    assert len(readme) <= 250
    first_code = readme.index("```console") + 1
    assert readme[first_code].startswith("make demo") and readme[first_code + 1].startswith("make test")
