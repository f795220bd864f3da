"""A step budget in a real training run: printed, recorded, and test_checkpoint=last."""

from __future__ import annotations

import json

import torch

from fer_lightning.runs import train_and_test
from tests.conftest import TINY, compose_cfg


def test_a_training_run_prints_and_records_its_budget(tmp_path, data_dir, capsys):
    cfg = compose_cfg(
        [*TINY, "modality=visible", "logger=none", "budget.steps=5", "budget.val_checks=2"], tmp_path, data_dir
    )
    results, run = train_and_test(cfg)
    budget = json.loads((tmp_path / "results.json").read_text())["budget"]
    assert budget["mode"] == "steps" and budget["steps"] >= 5 and budget["val_checks"] == 2
    assert results["epochs_trained"] == budget["epochs"]
    assert results["test_checkpoint"] == "best" and "best-epoch" in results["best_checkpoint"]
    assert run.trainer.global_step == budget["steps"]
    assert f"budget (steps): {budget['steps']} optimiser steps" in capsys.readouterr().out
    assert run.trainer.lr_scheduler_configs[0].interval == "step"
    assert run.trainer.lr_scheduler_configs[0].scheduler.T_max == budget["steps"]


def test_test_checkpoint_last_tests_the_final_weights(tmp_path, data_dir):
    # 3 epochs validated every 2: last.ckpt is due at epoch 2 and, for test_checkpoint=last, at the final epoch 3
    cfg = compose_cfg(
        [
            *TINY,
            "modality=visible",
            "logger=none",
            "trainer.max_epochs=3",
            "trainer.check_val_every_n_epoch=2",
            "callbacks.model_checkpoint.test_checkpoint=last",
            "callbacks.model_checkpoint.keep=tested",
        ],
        tmp_path,
        data_dir,
    )
    results, _ = train_and_test(cfg)
    assert results["test_checkpoint"] == "last" and results["checkpoint"].endswith("last.ckpt")
    assert results["best_checkpoint"] == results["checkpoint"]  # the deprecated name, for one release
    # keep=tested: once tested, the best-validation file it did not test is gone
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]
    tested = torch.load(results["checkpoint"], map_location="cpu", weights_only=True)
    assert tested["epoch"] == 2, "the final epoch's weights, not those of the last validation check"
    assert 0.0 <= results["best_val_accuracy"] <= 1.0  # the last validation check's
