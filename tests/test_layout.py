"""The house drawn from its imports: every core module sits in a layer, imports only from its own layer or
those below, and no two modules import each other, however indirectly."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "core" / "src" / "voxfit"

#: Lowest first. A module imports only modules of its own layer or of those before it.
LAYERS = [
    ("foundations", ["voxfit.util", "voxfit.errors"]),
    ("contract", ["voxfit.models", "voxfit.engine", "voxfit.registry", "voxfit.options", "voxfit.settings"]),
    ("plugin host", ["voxfit.hookspecs", "voxfit.plugins", "voxfit.builtin"]),
    ("planning", ["voxfit.planning"]),
    ("speaking", ["voxfit.speaking"]),
    ("sdk", ["voxfit.sdk"]),  # what plugins (the core's own engines among them) may import
    ("tuning and cluster", ["voxfit.tuning", "voxfit.cluster"]),
    ("engines", ["voxfit.engines"]),
    ("surfaces", ["voxfit.server", "voxfit.testing"]),
    ("command line", ["voxfit.cli"]),
    ("package", ["voxfit"]),  # the facade: `import voxfit` and its lazy attributes
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best = max((prefix for _, prefixes in LAYERS for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, (_, prefixes) in enumerate(LAYERS) if best in prefixes)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _imports(module: str) -> list[tuple[str, int]]:
    """The voxfit modules ``module`` imports (at any depth of its code), with line numbers; type-only ones left out."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{module}:{node.lineno}: a relative import (the core imports absolutely)"
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        # The package itself (its version, its lazy attributes) is the facade, not a layer.
        found += [(name, node.lineno) for name in names if name in MODULES and name not in (module, "voxfit")]
    return found


def test_every_module_is_in_a_layer():
    for module in MODULES:
        assert _layer(module) >= 0


def test_no_module_imports_upwards():
    upward = [f"{module}:{line} ({LAYERS[_layer(module)][0]}) imports {name} ({LAYERS[_layer(name)][0]})"
              for module in MODULES if module != "voxfit" for name, line in _imports(module)
              if _layer(name) > _layer(module)]
    assert upward == []


def test_no_import_circles():
    graph = {module: {name for name, _ in _imports(module)} for module in MODULES}
    graph["voxfit"] = set()  # the package's lazy attributes import on demand; nothing imports them back eagerly
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                circles.append(" -> ".join(path[path.index(name):] + [name]))
            elif name not in state:
                visit(name, path + [name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_no_engine_is_named_outside_the_engines():
    # The core knows engines only through what they register: their names live under voxfit/engines/.
    named = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or "engines" in path.relative_to(PACKAGE).parts or path.suffix in (".pyc", ".png"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if any(name in line.lower() for name in ("piper", "fish")):
                named.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert named == []


SHORT_FUNCTIONS = [REPO / "core" / "src", REPO / "plugins", REPO / "docs" / "examples", REPO / "benchmarks"]


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for root in SHORT_FUNCTIONS:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
