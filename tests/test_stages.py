"""The stage packages import one way (no processes): planning and storing below, judging on
planning, measuring on judging's estimators, reporting on judging, the CLI above them all."""

from __future__ import annotations

import ast
from pathlib import Path

import asyncbench

PACKAGE = Path(asyncbench.__file__).parent
# What each stage may import besides itself; anything else is an upward import.
ALLOWED = {
    "storing": set(),
    "planning": {"storing"},
    "judging": {"planning", "storing"},
    "measuring": {"planning", "storing", "judging"},
    "reporting": {"planning", "storing", "judging"},
}


def imported_modules(path: Path) -> set[str]:
    """The ``asyncbench`` modules a file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("asyncbench.")}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_stage_imports_only_the_stages_below_it():
    upward = []
    for stage, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / stage).glob("*.py")):
            for module in imported_modules(path):
                target = stage_of(module)
                if target and target != stage and target not in allowed:
                    upward.append(f"{stage}/{path.name} imports {module}")
    assert not upward, "\n".join(upward)


def test_the_top_holds_only_the_command_line():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "cli.py"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} \
        == set(ALLOWED)


def test_the_check_sees_an_upward_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from asyncbench.measuring import run\n")
    assert stage_of(next(iter(imported_modules(planted) - {"asyncbench.measuring"}))) \
        == "measuring"
