"""The training budget: epochs, validation checks and the LR horizon that follow from the train-set size.

A recipe gives its budget in optimiser steps (``budget.steps``), so it does not collapse on a small dataset
(12 epochs of 100 images at batch 64 are 24 steps) nor explode on a large one; the epochs are derived from the
number of training images. ``budget.val_checks`` spreads a fixed number of validation checks over the run, and
in step mode the LR schedule anneals over the same steps, stepped once per optimiser step. With
``budget.steps=null`` the run takes ``trainer.max_epochs`` epochs as configured (the synthetic default, and the
presets that pin the study's budget in epochs).

Steps are global optimiser steps: on N devices each step takes one batch of ``dataset.batch_size`` per device
(Lightning's DistributedSampler gives each rank ``ceil(images / N)`` of them), so an epoch is N times shorter and
``budget.steps`` trains for as many steps, and anneals the LR over them, as on one device.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from fer_lightning.errors import FERError
from fer_lightning.validation import Number, checked

log = logging.getLogger(__name__)

# budget.steps / budget.val_checks: a count, or null (the run takes trainer.max_epochs as configured)
RULES = {f"budget.{key}": Number(int, 1, null=True, hint=", or null") for key in ("steps", "val_checks")}


@dataclass(frozen=True)
class Budget:
    mode: str  # "steps": derived from budget.steps; "epochs": trainer.max_epochs as configured
    train_images: int  # per epoch: the training images times the offline copies and the passes
    steps_per_epoch: int
    epochs: int
    steps: int
    check_val_every_n_epoch: int
    val_checks: int
    # the optimiser steps the LR schedule anneals over (step mode); None: model.scheduler as configured
    lr_horizon_steps: int | None
    world_size: int  # processes (devices x nodes); each draws dataset.batch_size images per step
    global_batch: int  # images per optimiser step: dataset.batch_size x world_size
    passes_per_epoch: int = 1

    def record(self) -> dict[str, Any]:
        """The ``budget`` object of results.json."""
        return asdict(self)

    def describe(self) -> str:
        lr = f", LR annealed over {self.lr_horizon_steps} steps" if self.lr_horizon_steps else ""
        devices = f" on {self.world_size} devices" if self.world_size > 1 else ""
        passes = f" in {self.passes_per_epoch} passes" if self.passes_per_epoch > 1 else ""
        return (
            f"budget ({self.mode}): {self.steps} optimiser steps = {self.epochs} epochs x {self.steps_per_epoch} "
            f"steps ({self.train_images} training images per epoch{passes}, {self.global_batch} per step{devices}), "
            f"{self.val_checks} validation checks "
            f"(every {self.check_val_every_n_epoch} epochs){lr}"
        )

    def callbacks(self) -> list[L.Callback]:
        return [StepwiseLR()] if self.lr_horizon_steps else []


def _interval(epochs: int, val_checks: int) -> int:
    """The validation interval, in epochs, that overshoots ``epochs`` least once the run is rounded up to whole
    intervals, among those giving ``val_checks`` to ``2 * val_checks - 1`` checks; of equal overshoots, the longer
    interval (fewer checks). Plain ``epochs // val_checks`` can add almost one interval: 245 epochs at 10 checks
    would become 264 (24 x 11), 8 % more compute than asked; this picks 247 (19 x 13)."""
    # ceil(epochs / every) >= val_checks  <=>  every < epochs / (val_checks - 1)
    longest = epochs if val_checks == 1 else max(1, math.ceil(epochs / (val_checks - 1)) - 1)
    shortest = min(longest, max(1, math.ceil(epochs / (2 * val_checks - 1))))
    return min(range(longest, shortest - 1, -1), key=lambda every: math.ceil(epochs / every) * every)


def plan(
    budget: Mapping | None,
    n_train: int,
    batch_size: int,
    offline_copies: int = 0,
    passes: int = 1,
    *,
    max_epochs: int,
    check_val_every_n_epoch: int = 1,
    limit_train_batches: int | float = 1.0,
    world_size: int = 1,
) -> Budget:
    """The run's budget for ``n_train`` training images (before the study's ``offline_copies`` expansion).

    Step mode rounds up to whole epochs, and up to a whole number of validation intervals, so the run takes at
    least ``budget.steps`` steps and ``budget.val_checks`` checks, and its last epoch is validated.
    ``limit_train_batches`` is the Trainer's (per rank); ``batch_size`` is per device; ``passes``: training-set
    passes per epoch (``dataset.passes_per_epoch``).
    """
    budget = budget or {}
    steps, val_checks = (checked(RULES, f"budget.{key}", budget.get(key)) for key in ("steps", "val_checks"))
    if n_train < 1 or batch_size < 1:
        raise FERError(f"budget: {n_train} training images at batch {batch_size}; add training data")
    images = n_train * max(1, offline_copies) * max(1, passes)
    # ceil(ceil(images / world_size) / batch_size): each rank's padded share, in batches
    per_epoch = math.ceil(images / (batch_size * world_size))
    if isinstance(limit_train_batches, int):
        per_epoch = min(per_epoch, limit_train_batches)
    else:  # a fraction, as Lightning counts it
        per_epoch = max(1, int(per_epoch * limit_train_batches))
    epochs = math.ceil(steps / per_epoch) if steps else int(max_epochs)
    if steps and val_checks:
        every = _interval(epochs, val_checks)
    elif val_checks:
        every = max(1, epochs // val_checks)
    else:
        every = int(check_val_every_n_epoch or 1)
    if steps:
        epochs = math.ceil(epochs / every) * every
    return Budget(
        mode="steps" if steps else "epochs",
        train_images=images,
        steps_per_epoch=per_epoch,
        epochs=epochs,
        steps=epochs * per_epoch,
        check_val_every_n_epoch=every,
        val_checks=epochs // every,
        lr_horizon_steps=epochs * per_epoch if steps else None,
        world_size=world_size,
        global_batch=batch_size * world_size,
        passes_per_epoch=max(1, passes),
    )


# In a step budget an epoch is at least this many steps (dataset.passes_per_epoch=auto), unless that would make an
# epoch longer than the steps between two validation checks.
MIN_EPOCH_STEPS = 100


def auto_passes(budget: Mapping | None, steps_per_pass: int) -> int:
    """Training-set passes per epoch for ``dataset.passes_per_epoch=auto``: 1 in an epoch budget (an epoch keeps
    its meaning), else enough for :data:`MIN_EPOCH_STEPS`, at most one validation interval's steps."""
    budget = budget or {}
    steps, val_checks = (checked(RULES, f"budget.{key}", budget.get(key)) for key in ("steps", "val_checks"))
    if not steps or steps_per_pass < 1:
        return 1
    per_check = steps // (val_checks or 1)
    target = max(1, min(math.ceil(MIN_EPOCH_STEPS / steps_per_pass), per_check // steps_per_pass))

    def rounded(passes: int) -> int:  # the steps run once the budget is rounded up to whole epochs
        return math.ceil(steps / (passes * steps_per_pass)) * passes * steps_per_pass

    # longer epochs must not make the run overshoot budget.steps by more than one pass would (or 1 %)
    allowed = max(rounded(1), steps * 1.01)
    return next(p for p in range(target, 0, -1) if rounded(p) <= allowed)


def apply_budget(
    cfg: DictConfig, datamodule: L.LightningDataModule, world_size: int = 1, overrides: Sequence[str] = ()
) -> Budget:
    """Plans the budget for the set-up ``datamodule`` on ``world_size`` processes and writes it into ``cfg``
    before the trainer and model are built (step mode: the trainer's epochs and the scheduler's ``T_max``; the
    validation interval where ``budget.val_checks`` sets it); prints it (rank 0)."""
    loader = datamodule.train_dataloader()  # after the offline copies, if any: len(dataset) = originals x copies
    copies = max(1, int(getattr(datamodule, "offline_copies", 0) or 0))
    trainer = cfg.trainer
    if getattr(datamodule, "passes_setting", 1) == "auto":
        per_pass = math.ceil(len(loader.dataset) / (loader.batch_size * world_size))
        datamodule.passes_per_epoch = auto_passes(cfg.get("budget"), per_pass)
    result = plan(
        cfg.get("budget"),
        n_train=len(loader.dataset) // copies,
        batch_size=int(loader.batch_size),
        offline_copies=copies,
        passes=int(getattr(datamodule, "passes_per_epoch", 1)),
        max_epochs=int(trainer.get("max_epochs") or 1000),  # Lightning's default when neither is set
        check_val_every_n_epoch=int(trainer.get("check_val_every_n_epoch") or 1),
        limit_train_batches=trainer.get("limit_train_batches", 1.0),
        world_size=world_size,
    )
    with open_dict(cfg):
        if result.mode == "steps":
            trainer.max_epochs = result.epochs
            scheduler = cfg.model.get("scheduler")
            if scheduler is not None and "T_max" in scheduler:
                scheduler.T_max = result.lr_horizon_steps
        if result.mode == "steps" or (cfg.get("budget") or {}).get("val_checks"):
            trainer.check_val_every_n_epoch = result.check_val_every_n_epoch
    given = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == "trainer.max_epochs"]
    if rank_zero_only.rank == 0:
        print(result.describe())
        if result.mode == "steps" and given:
            print(
                f"warning: {given[0]} is ignored: budget.steps={cfg.budget.steps} "
                f"sets the run's length ({result.epochs} epochs here); pass budget.steps=null budget.val_checks=null "
                "to train for trainer.max_epochs epochs, or recipe=quick for a short first run",
                file=sys.stderr,
                flush=True,
            )
    return result


class StepwiseLR(L.Callback):
    """Steps the LR schedulers once per optimiser step (``FERModule.configure_optimizers`` asks for once per
    epoch), so a step budget's cosine decays smoothly even when an epoch is a handful of steps."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            config.interval = "step"
