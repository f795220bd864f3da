"""Checkpoints that survive being killed mid-write, an explicit rule for tied validation scores, resumes that
replay the same random draws, and a record of the config each start of a run used.

Lightning's own save writes the final file in place (through a temp file in the system temp dir, moved across
file systems by copying), so a SIGKILL while saving can leave a truncated ``last.ckpt``. Here every checkpoint
file is written beside its target, fsynced and renamed over it (:class:`AtomicCheckpointIO`, the trainer's
checkpoint IO): a checkpoint path holds either the previous complete file or the new complete file.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from fer_lightning.errors import FERError, Preempted
from fer_lightning.io import atomic_path, atomic_write_text, remove_stale_temporaries
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


class StepSeed(L.Callback):
    """Seeds the global RNGs (torch, numpy, python) before every training batch from (seed, epoch, batch, rank).

    Dropout masks then depend only on where training is, not on how it got there: a run resumed from any
    checkpoint draws what an uninterrupted run would, whatever Lightning draws while it restarts (it creates
    an extra DataLoader iterator, which takes a number from the global generator, at the start of each fit).
    Data order and augmentation already follow (seed, epoch) (``datasets.SeededSampler``).
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        key = [self.seed, trainer.current_epoch, batch_idx, trainer.global_rank]
        value = int(np.random.SeedSequence(key).generate_state(1)[0])
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


# ModelCheckpoint has no public hook to defer a removal, to write last.ckpt on demand or to save weights only for some
# files, so these private methods are overridden or called, and pyproject.toml pins lightning to the releases tested;
# tests/test_checkpointing.py fails when a release changes them (name -> parameters).
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


# Written beside last.ckpt when a job is preempted; a later start of the same run dir resumes from last.ckpt.
PREEMPTED = "preempted.json"


def _signal_numbers(names: list[str] | tuple[str, ...]) -> list[int]:
    numbers = []
    for name in names:
        upper = str(name).upper()
        number = getattr(signal, upper if upper.startswith("SIG") else f"SIG{upper}", None)
        if not isinstance(number, signal.Signals):
            raise FERError(f"callbacks.preemption.signals: {name!r} is not a signal name; use e.g. SIGUSR2")
        numbers.append(int(number))
    return numbers


class PreemptionCheckpoint(L.Callback):
    """Saves ``last.ckpt`` and leaves when the cluster says the job is about to be preempted or time out.

    SLURM sends the signal ahead of the kill (submitit asks for SIGUSR2, or ``SUBMITIT_PREEMPT_SIGNAL``); the
    handler only notes it, and at the end of the current training step every rank agrees, the checkpoint is
    written (the step counters and the data loader's position in the epoch with it), and ``preempted.json`` beside
    it says so. The handler that was installed before (submitit's) then runs: it requeues the job with the same
    arguments, and the requeued start resumes from ``last.ckpt`` by itself (``runs.resume.resolve_ckpt_path``).
    Without such a handler the command exits with status 3, and the same command resumes the run.

    Args:
        signals: signal names to act on.
        check_every_n_steps: on several processes the ranks agree on the signal every this many steps (a
            collective; on one process the flag is read at every step).
    """

    def __init__(self, signals: list[str] | tuple[str, ...] = ("SIGUSR2",), check_every_n_steps: int = 10):
        names = list(signals)
        env = os.environ.get("SUBMITIT_PREEMPT_SIGNAL")
        if env:
            names.append(env)
        self.signals = sorted(set(_signal_numbers(names)))
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        self.received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not on_fit_start: Lightning records the process's handlers after that hook and puts them back at its end
        self.received = None
        for number in self.signals:
            try:
                self._previous[number] = signal.signal(number, self._note)
            except ValueError:  # not the main thread: leave the process's handlers alone
                return

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        marker = self._marker(trainer)
        if trainer.is_global_zero and marker is not None and marker.is_file():
            marker.unlink()  # the run got to its end: nothing left to resume

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    @staticmethod
    def _marker(trainer: L.Trainer) -> Path | None:
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        return Path(dirpath) / PREEMPTED if dirpath else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        received = self.received is not None
        if trainer.world_size > 1:
            if trainer.global_step % self.check_every_n_steps:
                return
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        marker = self._marker(trainer)
        if marker is None:
            raise FERError("a preemption signal arrived, but the run saves no checkpoints (callbacks.model_checkpoint)")
        number = self.received or self.signals[0]
        path = marker.parent / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            record = {"signal": signal.Signals(number).name, "global_step": trainer.global_step}
            atomic_write_text(marker, json.dumps({**record, "checkpoint": str(path)}) + "\n")
        trainer.strategy.barrier("preempted")
        previous = self._previous.get(number)
        self._restore()
        if callable(previous):  # submitit's: requeue this job, then exit
            previous(number, None)
        raise Preempted(
            f"{signal.Signals(number).name} received: saved {path} at step {trainer.global_step}; run the same "
            "command again (or let the cluster requeue it) and it resumes from there"
        )


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


class RunConfigHistory(HydraCallback):
    """Keeps the ``.hydra/`` files of earlier starts of a run dir before Hydra overwrites them.

    Resuming (``hydra.run.dir=<dir> ckpt_path=last``) makes Hydra write the new start's config over
    ``<dir>/.hydra/``; the previous files move to ``<dir>/.hydra/history/<n>/`` and, on a resume, every key
    whose value changed is logged (a resume must repeat the first start's overrides, or load them with
    ``--config-path <dir>/.hydra --config-name config``).
    """

    IGNORED = ("ckpt_path",)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.output_subdir is None:  # this start writes no .hydra/ (a DDP rank other than 0)
            return
        run_dir = Path(str(config.hydra.run.dir))
        saved = run_dir / str(config.hydra.output_subdir)
        if not (saved / "config.yaml").is_file():
            return
        history = saved / "history"
        n = len(list(history.glob("*"))) if history.is_dir() else 0
        dest = history / f"{n:03d}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            if (saved / name).is_file():
                shutil.copy2(saved / name, dest / name)
        atomic_write_text(dest / "moved_at.txt", time.strftime("%Y-%m-%d %H:%M:%S\n"))
        if config.get("ckpt_path") is None:
            log.warning("%s already holds a run; its config is kept in %s", run_dir, dest)
            return
        old = _flatten(yaml.safe_load((saved / "config.yaml").read_text()) or {})
        task = OmegaConf.to_container(config, resolve=False)
        task.pop("hydra", None)
        new = _flatten(task)
        changed = sorted(
            k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and not k.startswith(self.IGNORED)
        )
        if changed:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
            more = f" (+{len(changed) - 8} more)" if len(changed) > 8 else ""
            log.warning(
                "resuming %s with a config that differs from its previous start: %s%s (previous config: %s)",
                run_dir,
                shown,
                more,
                dest / "config.yaml",
            )
