"""The training budget: steps, epochs, validation checks and the LR horizon from the train-set size."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from fer_lightning.budget import StepwiseLR, plan
from fer_lightning.errors import FERError


@pytest.mark.parametrize("n_train", [20, 100, 393, 5000])
def test_a_step_budget_gets_at_least_its_steps_and_validation_checks_whatever_the_dataset_size(n_train):
    b = plan({"steps": 8000, "val_checks": 50}, n_train, batch_size=64, max_epochs=12)
    assert b.mode == "steps" and b.steps >= 8000 and b.val_checks >= 50
    assert b.steps == b.epochs * b.steps_per_epoch == b.lr_horizon_steps
    assert b.epochs % b.check_val_every_n_epoch == 0, "the last epoch is validated"
    assert b.steps < 8000 * 1.1, "rounding to whole epochs and validation intervals adds little"


@pytest.mark.parametrize("steps", [10, 97, 450, 490, 2000, 8000, 24000])
@pytest.mark.parametrize("val_checks", [3, 10, 50, 150])
def test_the_validation_interval_overshoots_the_steps_least(steps, val_checks):
    n_train, batch = 120, 64  # dataset=synthetic_small: 2 steps per epoch
    b = plan({"steps": steps, "val_checks": val_checks}, n_train, batch, max_epochs=12)
    asked = -(-steps // b.steps_per_epoch)
    assert b.epochs >= asked and b.epochs % b.check_val_every_n_epoch == 0
    assert val_checks <= b.val_checks < 2 * val_checks or b.check_val_every_n_epoch == 1
    # no interval giving val_checks .. 2 * val_checks - 1 checks would have wasted fewer epochs
    for every in range(1, asked + 1):
        if val_checks <= -(-asked // every) < 2 * val_checks:
            assert b.epochs <= -(-asked // every) * every


def test_the_loops_490_steps_are_not_rounded_up_to_528():
    # 245 epochs at 10 checks: every 24 epochs would give 264 epochs (528 steps, +8 %); every 19 gives 247
    b = plan({"steps": 490, "val_checks": 10}, 120, batch_size=64, max_epochs=12)
    assert (b.epochs, b.steps, b.check_val_every_n_epoch, b.val_checks) == (247, 494, 19, 13)
    assert plan({"steps": 480, "val_checks": 10}, 120, 64, max_epochs=12).steps == 480


def test_a_100_image_dataset_trains_for_the_configured_steps():
    b = plan({"steps": 2000, "val_checks": 50}, 100, batch_size=64, max_epochs=12)
    assert (b.steps_per_epoch, b.epochs, b.steps) == (2, 1000, 2000)
    assert (b.check_val_every_n_epoch, b.val_checks) == (20, 50)


def test_the_synthetic_default_keeps_its_epochs():
    # 60 subjects x 5 classes x 3 samples, 60 % of subjects for training = 540 images, batch 64, 12 epochs
    b = plan({"steps": None, "val_checks": None}, 540, batch_size=64, max_epochs=12)
    assert (b.mode, b.epochs, b.steps_per_epoch, b.steps, b.val_checks) == ("epochs", 12, 9, 108, 12)
    assert b.lr_horizon_steps is None and b.callbacks() == []


def test_offline_copies_count_as_training_images():
    # the study on VIRI: 393 images x 26 copies = 10,218 per epoch, 160 steps at batch 64, 50 epochs
    b = plan(None, 393, batch_size=64, offline_copies=26, max_epochs=50, check_val_every_n_epoch=1)
    assert (b.train_images, b.steps_per_epoch, b.steps, b.val_checks) == (10218, 160, 8000, 50)


def test_limited_train_batches_shorten_an_epoch_as_lightning_counts():
    assert plan({"steps": 10}, 100, 8, max_epochs=1, limit_train_batches=2).epochs == 5
    assert plan({"steps": 10}, 100, 8, max_epochs=1, limit_train_batches=0.5).steps_per_epoch == 6


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": -5}, {"val_checks": 2.5}, {"steps": True}])
def test_a_bad_budget_names_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(FERError, match=rf"budget\.{key}="):
        plan(bad, 100, 64, max_epochs=12)


class _Linear(L.LightningModule):
    def __init__(self, horizon: int):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.horizon = horizon
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):  # as FERModule asks: stepped once per epoch
        optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.horizon)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def test_stepwise_lr_anneals_once_per_optimiser_step(tmp_path):
    data = torch.utils.data.DataLoader(torch.ones(8, 2), batch_size=2)  # 4 steps per epoch
    model = _Linear(horizon=8)
    trainer = L.Trainer(
        max_epochs=2, callbacks=[StepwiseLR()], logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    trainer.fit(model, data)
    expected = [0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / 8))).item() for s in range(8)]
    assert model.lrs == pytest.approx(expected, abs=1e-6)
