"""RunFigures: curves.png at fit end; confusion matrix, per-class table and misclassified samples to wandb."""

from __future__ import annotations

import sys

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from fer_lightning.callbacks.figures import RunFigures


def test_history_survives_a_checkpoint_round_trip(tmp_path):
    cb = RunFigures(str(tmp_path))
    cb.history = {0: {"epoch": 0, "train/loss": 1.5}, 1: {"epoch": 1, "train/loss": 1.2, "val/accuracy": 0.4}}
    restored = RunFigures(str(tmp_path))
    restored.load_state_dict(torch.load(_save(cb.state_dict(), tmp_path), weights_only=True))
    assert restored.history == cb.history


def _save(obj, tmp_path):
    path = tmp_path / "state.pt"
    torch.save(obj, path)
    return path


class _NoWandb:
    """Stands in for the wandb module: any use of it is a failure."""

    def __getattr__(self, name):
        raise AssertionError(f"wandb.{name} used without a wandb logger")


def test_no_wandb_logger_means_no_wandb_calls(tmp_path, monkeypatch):
    """A tested run with outputs to log, but a CSV logger only: wandb is never touched."""
    monkeypatch.setitem(sys.modules, "wandb", _NoWandb())
    trainer = Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", enable_progress_bar=False)
    module = torch.nn.Module()
    module.class_names = ["a", "b"]
    module.test_outputs = {"labels": torch.tensor([0, 1]), "probs": torch.tensor([[0.9, 0.1], [0.2, 0.8]])}
    RunFigures(str(tmp_path)).on_test_end(trainer, module)
