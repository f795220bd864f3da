"""Checkpoints that survive being killed mid-write, and an explicit rule for tied validation scores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fer_lightning.errors import FERError
from fer_lightning.io import atomic_path, remove_stale_temporaries
from fer_lightning.validation import Choice

log = logging.getLogger(__name__)

# tie_break value -> the logged metric that decides between checkpoints with the same monitored score
TIE_METRICS = {"val_loss": "val/loss"}


TIE_RULES = ("earlier", "later", *TIE_METRICS)


# which weights a training run tests: the best-validation checkpoint, or the last one
TEST_CHECKPOINTS = ("best", "last")


# which checkpoint files a finished, tested run keeps: every one, or only the one it tested
KEEP = ("all", "tested")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with each local file written to a temporary sibling, fsynced and renamed."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote stores: fsspec's transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


# ModelCheckpoint has no public hook to defer a removal, to write last.ckpt on demand or to save weights only for some
# files, so these private methods are overridden or called, and pyproject.toml pins lightning to the releases tested;
# tests/unit/callbacks/test_checkpointing.py fails when a release changes them (name -> parameters).
PRIVATE_MODEL_CHECKPOINT_API = {
    "_save_checkpoint": ("self", "trainer", "filepath"),
    "_remove_checkpoint": ("self", "trainer", "filepath"),
    "_save_last_checkpoint": ("self", "trainer", "monitor_candidates"),
    "_should_skip_saving_checkpoint": ("self", "trainer"),
    "_monitor_candidates": ("self", "trainer"),
}


class AtomicModelCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` whose files are complete or absent, whose ties are settled by a stated rule, and
    whose resumes are exact.

    - The trainer's checkpoint IO becomes :class:`AtomicCheckpointIO` where it is Lightning's default one.
    - ``tie_break``: which of two checkpoints with the same monitored score is kept (with 15-30 validation
      images, equal accuracies are common). ``earlier`` keeps the first (Lightning's rule), ``later`` the newer
      one (the study's loop), ``val_loss`` the one with the lower validation loss (the earlier on equal loss).
    - ``test_checkpoint``: the weights a training run tests. ``best`` (the best-validation checkpoint) or ``last``
      (the run's final weights, in ``last.ckpt``): on 15-30 validation images a peak is mostly noise, and a run
      whose LR anneals to zero over its whole budget has settled at its end.
    - ``last.ckpt`` is rewritten after every ``last_every_n_epochs`` training epochs, not only when a top-k
      file is saved (Lightning's rule), so a killed run loses at most that many epochs.
    - Checkpoints superseded by a better one are deleted only after ``last.ckpt`` is written, so the best path
      recorded in ``last.ckpt`` still exists whenever the run is killed.
    - ``keep``: ``all`` keeps ``last.ckpt`` and the best-validation file; ``tested`` deletes, once the run has been
      tested and its results.json written (:meth:`keep_tested_only`), the one it did not test. With
      ``test_checkpoint=best`` that is ``last.ckpt``: the finished run can then not be resumed or trained further.
      A run stopped before its test (killed, preempted) keeps both.
    """

    def __init__(
        self,
        *args: Any,
        last_every_n_epochs: int = 1,
        tie_break: str = "earlier",
        test_checkpoint: str = "best",
        keep: str = "all",
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        key = "callbacks.model_checkpoint."
        Choice(KEEP).check(f"{key}keep", keep)
        Choice(TIE_RULES).check(f"{key}tie_break", tie_break)
        Choice(TEST_CHECKPOINTS).check(f"{key}test_checkpoint", test_checkpoint)
        if test_checkpoint == "last" and not self.save_last:
            raise FERError(
                "callbacks.model_checkpoint.test_checkpoint=last needs callbacks.model_checkpoint.save_last=true"
            )
        self.tie_break = tie_break
        self.test_checkpoint = test_checkpoint
        self.keep = keep
        self.last_every_n_epochs = max(1, int(last_every_n_epochs))
        self._pending_removals: list[str] = []
        # checkpoint path -> its tie metric (val_loss rule), kept for the checkpoints in best_k_models
        self.tie_values: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        elif not isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
            log.warning("%s writes checkpoints; they are not written atomically", trainer.strategy.checkpoint_io)
        # leftovers of a save that was killed before its rename
        if trainer.is_global_zero and self.dirpath:
            remove_stale_temporaries(self.dirpath)

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        if super().check_monitor_top_k(trainer, current):
            return True
        if current is None or self.tie_break == "earlier" or self.save_top_k < 1:
            return False
        kth = self.best_k_models.get(self.kth_best_model_path)
        if kth is None or float(current) != float(kth):
            return False
        if self.tie_break == "later":
            wins = True
        else:
            new, old = self._tie_value(trainer), self.tie_values.get(self.kth_best_model_path)
            wins = new is not None and old is not None and new < old
        return trainer.strategy.reduce_boolean_decision(wins, all=True)

    def _tie_value(self, trainer: L.Trainer) -> float | None:
        value = trainer.callback_metrics.get(TIE_METRICS.get(self.tie_break, ""))
        return None if value is None else float(value)

    def _record_tie_values(self, trainer: L.Trainer) -> None:
        if self.tie_break not in TIE_METRICS:
            return
        value = self._tie_value(trainer)
        for path in self.best_k_models:
            if path not in self.tie_values and value is not None:
                self.tie_values[path] = value
        self.tie_values = {p: v for p, v in self.tie_values.items() if p in self.best_k_models}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._record_tie_values(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tie_values": dict(self.tie_values)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.tie_values = dict(state_dict.get("tie_values", {}))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Only last.ckpt, which a resume reads, carries the optimiser state (two thirds of an Adam checkpoint); the
        # best-validation file holds what evaluate, predict and a test of it need: weights, hyperparameters and the
        # datamodule's state.
        full = self.save_weights_only
        self.save_weights_only = full or Path(filepath).name != self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only = full

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self._pending_removals.append(filepath)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        pending, self._pending_removals = self._pending_removals, []
        keep = {self.best_model_path, self.last_model_path, *self.best_k_models}
        for path in pending:
            if path not in keep:
                super()._remove_checkpoint(trainer, path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning writes last.ckpt here even under fast_dev_run (debug=fast): a smoke run with nothing to resume
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def keep_tested_only(self, trainer: L.Trainer, tested: str | None) -> list[str]:
        """``keep=tested``: deletes this run's checkpoint files other than ``tested`` (call it once the run's
        results are written); returns the paths deleted."""
        if self.keep != "tested" or not tested or not trainer.is_global_zero:
            return []
        written = {self.best_model_path, self.last_model_path, *self.best_k_models} - {"", tested}
        removed = [p for p in sorted(written) if Path(p).is_file() and Path(p).resolve() != Path(tested).resolve()]
        for path in removed:
            Path(path).unlink()
        if removed:
            log.info("keep=tested: deleted %s (tested: %s)", ", ".join(Path(p).name for p in removed), tested)
        return removed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._record_tie_values(trainer)
        # Lightning rewrites last.ckpt only when a top-k file was saved (or with save_last="link"): after an
        # epoch without a better val score a kill would lose it. Skipped when this epoch's is already written.
        due = (trainer.current_epoch + 1) % self.last_every_n_epochs == 0 or trainer.should_stop
        # test_checkpoint=last tests last.ckpt: it must hold the final epoch's weights
        due = due or (self.test_checkpoint == "last" and trainer.current_epoch + 1 >= (trainer.max_epochs or 0))
        if self.save_last and due and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
