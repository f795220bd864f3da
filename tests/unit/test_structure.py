"""The package's shape: commands are thin shells that never import each other, and one run layer reports runs;
the suite's shape: unit tests beside the code they test, the runs apart in tests/integration/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "fer_lightning"
TESTS = REPO / "tests"
# What trains or starts a process. A file under tests/unit/ names none of them, nor a helper that reaches one.
RUNS = {"train_and_test", "tiny_run", "subprocess"}
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


def used_names(tree: ast.AST) -> set[str]:
    """Every name a module or definition uses: variables, attributes, arguments (fixtures) and what it imports."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, ast.Import):
            found |= {part for a in node.names for part in a.name.split(".")}
        elif isinstance(node, ast.ImportFrom):
            found |= {a.name for a in node.names} | set((node.module or "").split("."))
    return found


def running_names() -> set[str]:
    """RUNS and every function, class or fixture of tests/helpers/ that reaches one of them."""
    uses = {}
    for path in (TESTS / "helpers").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                uses[node.name] = used_names(node)
    found = set(RUNS)
    while more := {name for name, used in uses.items() if name not in found and used & found}:
        found |= more
    return found


def test_every_test_file_is_under_unit_or_integration_with_a_unique_name():
    files = sorted(TESTS.rglob("test_*.py"))
    where = {p: p.relative_to(TESTS).parts[0] for p in files}
    misplaced = [str(p.relative_to(TESTS)) for p in files if where[p] not in {"unit", "integration"}]
    assert not misplaced, f"{misplaced}: a test goes under tests/unit/ (mirroring fer_lightning/) or tests/integration/"
    names = [p.name for p in files]
    # no __init__.py: pytest imports each test file by its basename
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_a_test_file_imports_no_other_test_file():
    for path in sorted(TESTS.rglob("*.py")):
        imported = imported_modules(path)
        bad = sorted(m for m in imported if m.split(".")[-1].startswith("test_") or ".test_" in m)
        assert not bad, f"{path.relative_to(REPO)} imports {bad}: move what it shares into tests/helpers/"


def test_a_unit_test_neither_trains_nor_starts_a_process():
    running = running_names()
    assert {"tiny_run", "train_process", "train_cli"} <= running  # the helpers that do are seen through
    for path in sorted((TESTS / "unit").rglob("*.py")):
        used = used_names(ast.parse(path.read_text())) & running
        assert not used, f"{path.relative_to(REPO)} uses {sorted(used)}: move those tests to tests/integration/"



# Size limits (issue 23): a module over MAX_MODULE_LINES or a function over MAX_FUNCTION_LINES holds more than one
# job. The synthetic renderer is exempt: its drawing functions are long lists of shapes.
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
SIZE_EXEMPT_DIRS = ("data/synthetic/",)
# path relative to the package -> why it may be over a limit for now
SIZE_EXEMPT: dict[str, str] = {}


def oversized(package: Path) -> list[str]:
    """Every module of ``package`` over MAX_MODULE_LINES lines and every function over MAX_FUNCTION_LINES (its
    ``def`` line to its last line), as ``path: what``; exempt paths included."""
    found = []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if name.startswith(SIZE_EXEMPT_DIRS):
            continue
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}: {node.name}() at line {node.lineno} is {length} lines")
    return found


def test_no_module_or_function_is_over_the_size_limits():
    over = [o for o in oversized(PACKAGE) if o.split(":")[0] not in SIZE_EXEMPT]
    assert not over, (
        f"over {MAX_MODULE_LINES} lines a module / {MAX_FUNCTION_LINES} a function: {over}; split by responsibility"
    )


def test_every_size_exemption_is_still_needed():
    over = {o.split(":")[0] for o in oversized(PACKAGE)}
    assert not set(SIZE_EXEMPT) - over, f"{sorted(set(SIZE_EXEMPT) - over)} are within the limits: drop their entry"
