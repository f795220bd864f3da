"""Progress lines in train.log (and on the console when verbose), without a progress bar."""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from pathlib import Path

import lightning as L


def _clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(max(0.0, seconds))))


class ProgressLog(L.Callback):
    """One plain line per validation check, so a run's progress can be read where no progress bar draws:

    ``epoch 3/12  step 120/480  train/loss 0.8121  val/loss 0.7000  val/accuracy 0.7333  elapsed 0:01:12  eta 0:03:40``

    The line is appended to ``<output_dir>/train.log`` always (Hydra's log of the run), and printed to stdout when
    stdout is not a terminal (a cluster job's log file), where the Rich bar is left out. Rank 0 only.
    """

    METRICS = ("train/loss", "val/loss", "val/accuracy")

    def __init__(self, output_dir: str, log_name: str = "train.log", stdout: bool | None = None):
        self.path = Path(output_dir) / log_name
        self.stdout = (not sys.stdout.isatty()) if stdout is None else bool(stdout)
        self._validated = False
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._step0 = time.monotonic(), trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        validated, self._validated = self._validated, False
        if not validated or not trainer.is_global_zero:
            return
        step = trainer.global_step
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        elapsed = time.monotonic() - self._t0
        done = step - self._step0
        eta = elapsed / done * max(0, total - step) if done > 0 else float("nan")
        values = {k: trainer.callback_metrics.get(k) for k in self.METRICS}
        shown = "  ".join(f"{k} {float(v):.4f}" for k, v in values.items() if v is not None)
        line = (
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  step {step}/{int(total)}  {shown}  "
            f"elapsed {_clock(elapsed)}  eta {_clock(eta) if math.isfinite(eta) else '?'}"
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.stdout:
            print(line, flush=True)
