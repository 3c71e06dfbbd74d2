"""Plugins (first-party ones and the documented examples) import from the core through voxfit.sdk only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

SOURCES = sorted([*REPO.glob("plugins/*/src/**/*.py"), *REPO.glob("docs/examples/*/src/**/*.py"),
                  *REPO.glob("core/src/voxfit/engines/*/*.py")])  # the core's own engines are plugins too


def _own_package(path: Path) -> str:
    """The core package an engine of the core may import besides the SDK: its own (voxfit.engines.fish)."""
    parts = path.relative_to(REPO).parts
    return ".".join(parts[2:5]) if parts[:4] == ("core", "src", "voxfit", "engines") else "voxfit.sdk"


def core_imports(path: Path) -> list[str]:
    """``file:line: what`` for every import from ``voxfit`` that is not ``voxfit.sdk``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "voxfit" else [f"voxfit.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            own = _own_package(path)
            if (name == "voxfit" or name.startswith("voxfit.")) and name != "voxfit.sdk" and not (
                    name == own or name.startswith(own + ".")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {name} (plugins import voxfit.sdk only;"
                             " voxfit.testing belongs in tests)")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def test_there_are_plugin_sources_to_check():
    names = {p.relative_to(REPO).parts[1 if p.relative_to(REPO).parts[0] == "plugins" else 2] for p in SOURCES}
    assert {"cuda", "mps", "cpu_onnx", "wsl", "voxfit-beep", "voxfit-npu", "voxfit"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugin_code_imports_the_core_through_the_sdk_only(path):
    problems = core_imports(path)
    assert not problems, "\n".join(problems)


def test_the_check_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    source = tmp_path / "plugin.py"
    source.write_text("from voxfit.sdk import hookimpl\nimport voxfit.plugins\n\ndef f():\n"
                      "    from voxfit import models\n    from voxfit.testing import fish_tiny\n")
    assert core_imports(source) == [
        "plugin.py:2: imports voxfit.plugins (plugins import voxfit.sdk only; voxfit.testing belongs in tests)",
        "plugin.py:5: imports voxfit.models (plugins import voxfit.sdk only; voxfit.testing belongs in tests)",
        "plugin.py:6: imports voxfit.testing (plugins import voxfit.sdk only; voxfit.testing belongs in tests)",
    ]
