"""Checkpoints that survive being killed mid-write, resumes that replay the same random draws, and a record of
the config each start of a run used.

Lightning's own save writes the final file in place (through a temp file in the system temp dir, moved across
file systems by copying), so a SIGKILL while saving can leave a truncated ``last.ckpt``. Here every file is
written beside its target, fsynced and ``os.replace()``d over it: a checkpoint path holds either the previous
complete file or the new complete file, never part of one.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import numpy as np
import torch
import yaml
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

TMP_SUFFIX = ".partial"


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a file's (or a directory's entries') data to disk."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


class AtomicModelCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` whose files are complete or absent, and whose resumes are exact.

    - Each checkpoint is saved to ``<name>.partial`` in the same folder, fsynced, then renamed over
      ``<name>``.
    - ``last.ckpt`` is rewritten after every ``last_every_n_epochs`` training epochs, not only when a top-k
      file is saved (Lightning's rule), so a killed run loses at most that many epochs.
    - Checkpoints superseded by a better one are deleted only after ``last.ckpt`` is written, so the best path
      recorded in ``last.ckpt`` still exists whenever the run is killed.
    """

    def __init__(self, *args: Any, last_every_n_epochs: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.last_every_n_epochs = max(1, int(last_every_n_epochs))
        self._pending_removals: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # leftovers of a save that was killed before its rename
        if trainer.is_global_zero and self.dirpath and os.path.isdir(self.dirpath):
            for leftover in Path(self.dirpath).glob(f"*{TMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = filepath + TMP_SUFFIX
        trainer.save_checkpoint(tmp, self.save_weights_only)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            fsync_path(tmp)
            os.replace(tmp, filepath)
            fsync_path(os.path.dirname(os.path.abspath(filepath)))
        trainer.strategy.barrier("AtomicModelCheckpoint._save_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self._pending_removals.append(filepath)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        pending, self._pending_removals = self._pending_removals, []
        keep = {self.best_model_path, self.last_model_path, *self.best_k_models}
        for path in pending:
            if path not in keep:
                super()._remove_checkpoint(trainer, path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning rewrites last.ckpt only when a top-k file was saved (or with save_last="link"): after an
        # epoch without a better val score a kill would lose it. Skipped when this epoch's is already written.
        due = (trainer.current_epoch + 1) % self.last_every_n_epochs == 0 or trainer.should_stop
        if self.save_last and due and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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
        run_dir = Path(str(config.hydra.run.dir))
        saved = run_dir / str(config.hydra.output_subdir or ".hydra")
        if not (saved / "config.yaml").is_file():
            return
        history = saved / "history"
        n = len(list(history.glob("*"))) if history.is_dir() else 0
        dest = history / f"{n:03d}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            if (saved / name).is_file():
                shutil.copy2(saved / name, dest / name)
        (dest / "moved_at.txt").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
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
