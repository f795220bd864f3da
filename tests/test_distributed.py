"""Many devices, one answer: DDP runs (CPU, gloo, 2 processes) score the test set once, on one device, write one
run dir, count the budget in global steps, and fail when any rank fails."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from fer_lightning.budget import plan
from fer_lightning.callbacks.config_history import RunConfigHistory
from fer_lightning.errors import FERError
from fer_lightning.loggers import log_results
from fer_lightning.runs.config import apply_overrides, check_run_config
from fer_lightning.runs.distributed import ARGV_ENV, RANK_SETTINGS, failed_ranks, join_run, rank_failure
from fer_lightning.runs.instantiate import eval_trainer, world_size
from tests.conftest import REPO, TINY, compose_cfg
from tests.helpers.commands import prepare_tiny
from tests.helpers.wandb_runs import offline_runs, read_run

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
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


# ----------------------------------------------------------------------------------------- config and units


def test_strategy_and_num_nodes_are_settable_without_plus(tmp_path):
    cfg = compose_cfg([*TINY, "trainer.strategy=ddp", "trainer.num_nodes=2"], tmp_path)
    assert (cfg.trainer.strategy, cfg.trainer.num_nodes) == ("ddp", 2)
    default = compose_cfg(TINY, tmp_path)
    assert (default.trainer.strategy, default.trainer.num_nodes, default.trainer.devices) == ("auto", 1, 1)


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork", "ddp_notebook"])
def test_spawned_and_forked_strategies_are_refused(strategy, tmp_path):
    cfg = compose_cfg([*TINY, f"trainer.strategy={strategy}"], tmp_path)
    with pytest.raises(FERError, match=f"trainer.strategy={strategy}: .*use trainer.strategy=ddp"):
        check_run_config(cfg)


def test_ddp_spawn_on_the_command_line_is_one_error_line(tmp_path):
    args = [*TINY, *DDP[:2], "trainer.strategy=ddp_spawn", f"paths.log_dir={tmp_path}"]
    proc = command("fer_lightning.train", args, tmp_path)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("error: trainer.strategy=ddp_spawn") and "use trainer.strategy=ddp" in lines[-1]


def test_world_size_is_devices_times_nodes(tmp_path):
    cfg = compose_cfg([*TINY, "trainer.accelerator=cpu"], tmp_path)
    assert world_size(cfg.trainer) == 1
    cfg = compose_cfg([*TINY, *DDP, "trainer.num_nodes=2"], tmp_path)
    assert world_size(cfg.trainer) == 4


def test_the_budget_counts_global_steps_on_any_number_of_devices():
    one = plan({"steps": 120, "val_checks": 4}, 100, batch_size=8, max_epochs=12)
    two = plan({"steps": 120, "val_checks": 4}, 100, batch_size=8, max_epochs=12, world_size=2)
    # each rank takes ceil(100 / 2) = 50 images (DistributedSampler pads), 7 batches of 8
    assert (one.steps_per_epoch, two.steps_per_epoch) == (13, 7)
    assert two.steps >= 120 and two.lr_horizon_steps == two.steps == two.epochs * 7
    assert (two.world_size, two.global_batch) == (2, 16) and (one.world_size, one.global_batch) == (1, 8)
    assert {"world_size", "global_batch"} <= set(two.record())
    # ceil(ceil(n / w) / b) == ceil(n / (w * b)) for every size the sampler can give
    for n in range(1, 60):
        for w in (1, 2, 3, 8):
            per_rank = -(-n // w)
            assert plan({"steps": 10}, n, 4, max_epochs=1, world_size=w).steps_per_epoch == -(-per_rank // 4)


def test_evaluation_scores_on_one_device_whatever_the_run_trained_on(tmp_path):
    trained = compose_cfg([*TINY, *DDP, "trainer.num_nodes=2"], tmp_path)
    assert eval_trainer(trained.trainer).world_size == 1
    composed = compose_cfg(TINY, tmp_path)
    for override in ("trainer.devices=2", "trainer.strategy=ddp", "trainer.num_nodes=2"):
        with pytest.raises(FERError, match="one device"):
            apply_overrides(trained.copy(), composed, [override])
    assert apply_overrides(trained.copy(), composed, ["trainer.devices=1"]) == []


def test_log_results_on_a_rank_other_than_zero_does_nothing(tmp_path, monkeypatch):
    # rank 1's WandbLogger holds a dummy experiment: its summary was a function ('function' object has no
    # attribute 'update'), which crashed rank 1 of every DDP run with the default loggers
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    log_results([logger], {"test": {"n": 3, "accuracy": 0.5}}, tmp_path)


def test_a_rank_joining_a_job_writes_no_hydra_history(tmp_path):
    saved = tmp_path / ".hydra"
    saved.mkdir()
    (saved / "config.yaml").write_text("seed: 0\n")
    cfg = OmegaConf.create(
        {"seed": 0, "ckpt_path": None, "hydra": {"run": {"dir": str(tmp_path)}, "output_subdir": None}}
    )
    RunConfigHistory().on_run_start(cfg)
    assert not (saved / "history").exists()


def test_a_rank_started_by_rank_zero_takes_its_job(monkeypatch):
    argv = ["fer_lightning/train.py", "-m", "seed=0,1", "hydra.run.dir=elsewhere"]
    handed = {"pid": os.getppid(), "argv": ["seed=1", "hydra.run.dir='/runs/x/1'", *RANK_SETTINGS]}
    monkeypatch.setenv(ARGV_ENV, json.dumps(handed))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert join_run(argv) == [argv[0], *handed["argv"]]
    monkeypatch.setenv(ARGV_ENV, json.dumps({**handed, "pid": os.getppid() + 1}))  # exported by another process
    assert join_run(argv) == argv


def test_a_sweep_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(FERError, match="-m: a sweep cannot run under torchrun"):
        join_run(["train.py", "-m", "seed=0,1"])


def test_a_failed_rank_is_named_and_a_killed_one_is_not():
    procs = [SimpleNamespace(returncode=0), SimpleNamespace(returncode=-9), SimpleNamespace(returncode=1)]
    for p in procs:
        p.poll = lambda p=p: p.returncode
    assert failed_ranks(procs) == [(3, 1)]
    trainer = SimpleNamespace(world_size=4, strategy=SimpleNamespace(launcher=SimpleNamespace(procs=procs)))
    assert "rank 3 of 4 failed (exit status 1" in str(rank_failure(trainer))
    trainer.strategy.launcher.procs = procs[:2]
    assert rank_failure(trainer) is None


# ----------------------------------------------------------------------------------------- 2 processes


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
