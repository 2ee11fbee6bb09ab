"""Imports go one way, top to bottom (STYLE.md, issue 22). Every module of the repository is parsed, nothing is
imported, and an import of a higher layer anywhere in a file (inside a function, under ``TYPE_CHECKING``, for a type
or a colour table) fails."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# top to bottom: a module imports from its own layer or a lower one
LAYERS = (
    ("drivers", ("train", "eval", "test", "predict", "sweep", "bench", "tools", "scripts")),
    ("engine", ("engine",)),
    ("tasks", ("tasks",)),
    ("inference, reports", ("inference", "reports")),
    ("data, models, losses, metrics", ("data", "models", "losses", "metrics")),
    ("utils", ("utils",)),
)
LEVEL = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
NOT_LAYERED = ("tests",)  # the tests import whatever they check


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (``engine.cli``, ``train``), the tests and hidden folders left out."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_LAYERED or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        parts = rel.with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file, wherever it stands; relative ones resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
    return sorted(found)


def upward_imports(root: Path) -> list[str]:
    """``file:line: layer imports name (higher layer)`` for each import against the flow."""
    found = []
    for module, path in modules(root).items():
        own = LEVEL.get(module.split(".")[0])
        for line, name in imports(module, path):
            theirs = LEVEL.get(name.split(".")[0])
            if own is not None and theirs is not None and theirs < own:
                found.append(f"{path.relative_to(root)}:{line}: {LAYERS[own][0]} imports {name} ({LAYERS[theirs][0]})")
    return found


def test_every_module_has_a_layer():
    unplaced = sorted({m.split(".")[0] for m in modules(ROOT)} - set(LEVEL))
    assert not unplaced, f"top-level modules or packages in no layer of tests/test_layers.py's LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer():
    offenders = upward_imports(ROOT)
    assert not offenders, "\n".join(offenders)


def test_packages_of_one_layer_do_not_import_each_other_both_ways():
    edges = {
        (module.split(".")[0], name.split(".")[0])
        for module, path in modules(ROOT).items()
        for _, name in imports(module, path)
    }
    same_layer = {(a, b) for a, b in edges if a != b and a in LEVEL and LEVEL.get(b) == LEVEL[a]}
    circles = sorted(f"{a} <-> {b}" for a, b in same_layer if (b, a) in same_layer and a < b)
    assert not circles, circles


def test_the_check_sees_imports_in_functions_relative_ones_and_those_for_types(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text("from . import base\n")
    (tmp_path / "tasks" / "base.py").write_text("import numpy\nfrom utils.io import save\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("")
    (tmp_path / "data" / "x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tasks.base import Task\n"
        "def f():\n    import engine.cli\n"
        "from ..reports import html\n"
    )
    assert upward_imports(tmp_path) == [
        "data/x.py:3: data, models, losses, metrics imports tasks.base (tasks)",
        "data/x.py:5: data, models, losses, metrics imports engine.cli (engine)",
        "data/x.py:6: data, models, losses, metrics imports reports (inference, reports)",
    ]


MAX_LINES = 40  # the trainer is a short loop over parts with one job each (issue 22)
SHORT = ("engine",)


def long_functions(root: Path, folders=SHORT, limit: int = MAX_LINES) -> list[str]:
    """``file:line: name (N lines)`` for each function or method over ``limit`` lines (docstring and all)."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > limit:
                        found.append(f"{path.relative_to(root)}:{node.lineno}: {node.name} ({n} lines)")
    return found


def test_no_function_in_engine_is_over_forty_lines(tmp_path):
    assert long_functions(ROOT) == []
    # the check finds one: 41 lines is too long, 40 is not
    (tmp_path / "engine").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(39))
    (tmp_path / "engine" / "m.py").write_text(f"def ok():\n{body}\n\ndef long():\n{body}    return 0\n")
    assert long_functions(tmp_path) == ["engine/m.py:43: long (41 lines)"]
