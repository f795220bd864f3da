"""Logger construction: wandb that never prompts and runs offline unless the user has set it up."""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs) -> WandbLogger:
    """A WandbLogger; ``offline=None`` means offline unless WANDB_MODE=online or a wandb login exists."""
    if offline is None:
        mode = os.environ.get("WANDB_MODE")
        offline = mode == "offline" or (mode not in ("online", "run") and not _has_wandb_credentials())
    os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    return WandbLogger(offline=offline, **kwargs)


def finish_wandb(exit_code: int = 0) -> None:
    """Closes the active wandb run, if any: a multirun must start each job with a fresh one."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


class AppendingCSVLogger(CSVLogger):
    """A CSVLogger whose ``metrics.csv`` survives a resume in the same run dir.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, which would lose the epochs logged
    before a run was killed; this one keeps them and appends.
    """

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept = path.read_text() if path.is_file() else None
        writer = super().experiment
        if kept:
            path.write_text(kept)
            writer.metrics_keys = next(csv.reader([kept.splitlines()[0]]))
        return writer
