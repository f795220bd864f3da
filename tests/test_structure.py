"""The package's shape: commands are thin shells that never import each other, and one run layer reports runs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from fer_lightning.analysis.compare import compare
from fer_lightning.evaluate import evaluate
from tests.conftest import REPO
from tests.helpers.eval_runs import compose_app, tiny_run

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


def test_train_and_evaluate_write_the_same_results_keys(tmp_path_factory, data_dir, tmp_path):
    run_dir = tiny_run(tmp_path_factory, data_dir)
    trained = json.loads((run_dir / "results.json").read_text())
    evaluated = evaluate(compose_app("eval", [f"ckpt_path={trained['best_checkpoint']}"], tmp_path))
    assert set(evaluated) == set(trained)
    assert set(evaluated["test"]) == set(trained["test"])
    assert trained["source"] == "train" and evaluated["source"] == "evaluate"
    # "checkpoint": the file each one tested (evaluate's may be a last.ckpt: not a "best" one); "best_checkpoint"
    # is its deprecated name, kept for one release with the same value
    assert evaluated["checkpoint"] == str(Path(trained["checkpoint"]).resolve()) == evaluated["best_checkpoint"]
    assert trained["checkpoint"] == trained["best_checkpoint"]
    header = (run_dir / "predictions.csv").read_text().splitlines()[0]
    assert header == (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith("sample_id,label,pred,p_")


def test_compare_reads_two_training_run_dirs(tmp_path_factory, data_dir):
    fusion = tiny_run(tmp_path_factory, data_dir, "fusion")
    visible = tiny_run(tmp_path_factory, data_dir, "visible")
    result = compare(fusion, visible)["all"]
    n = json.loads((fusion / "results.json").read_text())["test"]["n"]
    assert result["n"] == n > 0
    assert result["accuracy_a"] == pytest.approx(json.loads((fusion / "results.json").read_text())["test"]["accuracy"])
    assert result["accuracy_b"] == pytest.approx(json.loads((visible / "results.json").read_text())["test"]["accuracy"])


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_command_sharing_app_main_keeps_its_own_hydra_job_name(command):
    """Their ``main`` is defined in app.py, yet Hydra's job name (in .hydra/hydra.yaml and --help) is theirs."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", f"fer_lightning.{command}", "--help"], cwd=REPO, capture_output=True, text=True
    )
    # --help's usage line is built from the job's task_name (evaluate's is eval: conf/eval.yaml names the module)
    assert proc.returncode == 0 and proc.stdout.startswith(f"python -m fer_lightning.{command} "), proc.stdout[:200]
