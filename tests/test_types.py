"""The SDK plugin authors import, and the contract modules behind it, pass mypy --strict (pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_the_sdk_and_the_contract_type_check_strictly():
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found in 10 source files" in done.stdout
