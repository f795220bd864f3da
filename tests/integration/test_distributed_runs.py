"""DDP and torchrun runs in child processes: one test score, one run dir, a failing rank fails the command."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY
from tests.helpers.commands import prepare_tiny
from tests.helpers.settings import DDP
from tests.helpers.wandb_runs import offline_runs, read_run

# the tiny synthetic set's test split (tests/conftest.py TINY): what every DDP run must score
TEST_N = 15


QUIET = ["trainer.precision=32-true", "+trainer.enable_progress_bar=false", "~callbacks.progress_bar"]


def command(module: str, args: list[str], tmp_path: Path, launcher: list[str] | None = None, **env):
    environ = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", **env}
    environ.pop("WANDB_API_KEY", None)
    environ["NETRC"] = str(tmp_path / "no-netrc")
    cmd = [*(launcher or [sys.executable]), "-m", module, *args]
    return subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=900)


def results_under(root: Path) -> list[Path]:
    return sorted(root.rglob("results.json"))


def test_ddp_spawn_on_the_command_line_is_one_error_line(tmp_path):
    args = [*TINY, *DDP[:2], "trainer.strategy=ddp_spawn", f"paths.log_dir={tmp_path}"]
    proc = command("fer_lightning.train", args, tmp_path)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("error: trainer.strategy=ddp_spawn") and "use trainer.strategy=ddp" in lines[-1]


def _one_run_dir(logs: Path) -> Path:
    run_dirs = [p for p in (logs / "train" / "runs").iterdir()]
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0]


def _check_once_scored(run_dir: Path, tmp_path: Path) -> dict:
    """One results.json over the whole test split; evaluate (defaults: one device) gives the same numbers."""
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test"]["n"] == TEST_N and results["budget"]["world_size"] == 2
    with open(run_dir / "predictions.csv") as f:
        ids = [r["sample_id"] for r in csv.DictReader(f)]
    assert len(ids) == len(set(ids)) == TEST_N
    assert not (run_dir / ".hydra" / "history").exists()
    checkpoint = f"ckpt_path={results['best_checkpoint']}"
    proc = command("fer_lightning.evaluate", [checkpoint, "logger=csv", f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["test"]["n"] == TEST_N
    assert evaluated["test"]["accuracy"] == results["test"]["accuracy"]
    assert evaluated["test"]["confusion_matrix"] == results["test"]["confusion_matrix"]
    # the same computation: every probability to the printed digits (rank 0 tests with the process's threads)
    assert (Path(evaluated["run_dir"]) / "predictions.csv").read_text() == (run_dir / "predictions.csv").read_text()
    return results


@pytest.mark.slow
def test_ddp_visible_scores_the_test_set_once_and_counts_global_steps(tmp_path, data_dir):
    prepare_tiny(data_dir, tmp_path)
    logs = tmp_path / "logs"
    args = [*TINY, *DDP, *QUIET, "modality=visible", "budget.steps=9", f"paths.data_dir={data_dir}"]
    # the default logger (wandb, offline, + CSV) and the default run dir naming, which each relaunched rank used
    # to give a new dir of its own
    proc = command("fer_lightning.train", [*args, f"paths.log_dir={logs}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _one_run_dir(logs)
    results = _check_once_scored(run_dir, tmp_path)
    # 60 training images, 30 per rank: 2 steps of 16 per epoch; 9 steps -> 5 epochs = 10 global steps
    budget = results["budget"]
    assert (budget["steps_per_epoch"], budget["global_batch"], budget["steps"]) == (2, 32, 10)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == budget["steps"] == budget["lr_horizon_steps"]
    schedule = last["lr_schedulers"][0]
    assert schedule["last_epoch"] == schedule["T_max"] == 10 and schedule["_last_lr"] == [schedule["eta_min"]]
    # robustness scores on one device too: every row over the whole split
    grid = ["kinds=[noise]", "severities=[1]", f"hydra.run.dir={tmp_path / 'robustness'}"]
    proc = command("fer_lightning.robustness", [f"ckpt_path={results['best_checkpoint']}", *grid], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "robustness" / "robustness.csv") as f:
        assert [int(r["n"]) for r in csv.DictReader(f)] == [TEST_N, TEST_N]
    (wandb_run,) = offline_runs(run_dir)
    assert read_run(wandb_run)["summary"]["test/n"] == TEST_N
    with open(run_dir / "csv" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("test/accuracy")]
    assert [float(r["test/accuracy"]) for r in logged] == pytest.approx([results["test"]["accuracy"]])


@pytest.mark.slow
def test_ddp_fusion_scores_the_test_set_once(tmp_path, data_dir):
    prepare_tiny(data_dir, tmp_path)
    run_dir = tmp_path / "run"
    args = [*TINY, *DDP, *QUIET, "modality=fusion", "logger=csv", "trainer.max_epochs=2"]
    proc = command("fer_lightning.train", [*args, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results_under(tmp_path) == [run_dir / "results.json"]
    _check_once_scored(run_dir, tmp_path)


FAILING_CALLBACK = """
import lightning as L


class FailOnRank(L.Callback):
    def __init__(self, rank: int):
        self.rank = rank

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.global_rank == self.rank:
            raise RuntimeError(f"rank {self.rank} cannot go on")
"""


@pytest.mark.slow
def test_a_failing_rank_fails_the_command(tmp_path, data_dir):
    prepare_tiny(data_dir, tmp_path)
    (tmp_path / "rank_hooks.py").write_text(FAILING_CALLBACK)
    run_dir = tmp_path / "run"
    hook = ["+callbacks.fail._target_=rank_hooks.FailOnRank", "+callbacks.fail.rank=1"]
    args = [*TINY, *DDP, *QUIET, "modality=visible", "logger=csv", "trainer.max_epochs=2", *hook]
    proc = command(
        "fer_lightning.train",
        [*args, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"],
        tmp_path,
        PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    assert proc.returncode != 0
    assert "rank 1 cannot go on" in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert lines == ["error: rank 1 of 2 failed (exit status 1; its error is printed above); the run wrote no results"]
    assert results_under(tmp_path) == []


@pytest.mark.slow
def test_a_ddp_sweep_gives_one_job_dir_per_job(tmp_path, data_dir):
    prepare_tiny(data_dir, tmp_path)
    logs = tmp_path / "logs"
    args = [*TINY, *DDP, *QUIET, "modality=visible", "logger=csv", "trainer.max_epochs=1"]
    proc = command(
        "fer_lightning.train",
        ["-m", "seed=0,1", *args, f"paths.data_dir={data_dir}", f"paths.log_dir={logs}"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    found = results_under(logs)
    assert found == [sweep / "0" / "results.json", sweep / "1" / "results.json"]
    assert [json.loads(p.read_text())["seed"] for p in found] == [0, 1]
    assert all(json.loads(p.read_text())["test"]["n"] == TEST_N for p in found)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["n_jobs"], summary["n_completed"]) == (2, 2)
    assert "sweep: 2 of 2 jobs completed" in proc.stdout
    assert not any((sweep / j / ".hydra" / "history").exists() for j in ("0", "1"))


@pytest.mark.slow
def test_torchrun_gives_one_run_dir(tmp_path, data_dir):
    prepare_tiny(data_dir, tmp_path)
    logs = tmp_path / "logs"
    args = [*TINY, *DDP, *QUIET, "modality=visible", "logger=csv", "trainer.max_epochs=1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    proc = command(
        "fer_lightning.train", [*args, f"paths.data_dir={data_dir}", f"paths.log_dir={logs}"], tmp_path, torchrun
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _one_run_dir(logs)
    assert results_under(logs) == [run_dir / "results.json"]
    assert json.loads((run_dir / "results.json").read_text())["test"]["n"] == TEST_N
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
