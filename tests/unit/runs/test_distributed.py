"""Many devices, one answer: the DDP settings, the per-rank run settings and how a failed rank is found. The 2-process
runs themselves are in tests/integration/test_distributed_runs.py."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
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
from tests.conftest import TINY, compose_cfg
from tests.helpers.settings import DDP

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
