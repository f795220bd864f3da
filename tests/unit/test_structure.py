"""The package's shape: commands are thin shells that never import each other, and one run layer reports runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "fer_lightning"
# The modules run as ``python -m fer_lightning.<command>``.
COMMANDS = sorted(p.stem for p in PACKAGE.glob("*.py") if "__main__" in p.read_text())
# The library module each of these commands is a shell around.
LIBRARY_OF = {
    "compare": "fer_lightning.analysis.compare",
    "report": "fer_lightning.analysis.results_table",
    "explain": "fer_lightning.analysis.cam",
    "bench": "fer_lightning.benchmarks.throughput",
    "robustness": "fer_lightning.runs.robustness",
    "predict": "fer_lightning.runs.predict",
    "export": "fer_lightning.runs.export",
}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_the_commands_are_found():
    assert {"train", "evaluate", "predict", "explain", "prepare", "report", "compare", "bench"} <= set(COMMANDS)
    assert set(LIBRARY_OF) <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_another_command(command):
    imports = imported_modules(PACKAGE / f"{command}.py")
    others = {f"fer_lightning.{c}" for c in COMMANDS if c != command}
    assert not imports & others, f"{command} imports {sorted(imports & others)}: move the shared code into a library"


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_define_no_classes(command):
    tree = ast.parse((PACKAGE / f"{command}.py").read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert not classes, f"{command} defines {classes}: move them into a library module"


@pytest.mark.parametrize("command", sorted(LIBRARY_OF))
def test_a_thin_command_calls_its_library(command):
    assert LIBRARY_OF[command] in imported_modules(PACKAGE / f"{command}.py")


def test_no_library_module_imports_a_command():
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.stem in COMMANDS:
            continue
        bad = imported_modules(path) & {f"fer_lightning.{c}" for c in COMMANDS}
        assert not bad, f"{path.relative_to(REPO)} imports the command(s) {sorted(bad)}"
