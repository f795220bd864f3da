"""The layered commands checked through runs: shared results keys, compare on run dirs, each command's Hydra
job name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lightning.analysis.compare import compare
from fer_lightning.evaluate import evaluate
from tests.conftest import REPO
from tests.helpers.eval_runs import compose_app, tiny_run


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
