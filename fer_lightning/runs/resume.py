"""Where a fit resumes from: ``ckpt_path`` (a file, or ``last``), or the run dir's last.ckpt after a preemption or
a SLURM requeue; each checked before Lightning reads it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fer_lightning.callbacks.preemption import PREEMPTED
from fer_lightning.data.datamodule import ManifestDataModule
from fer_lightning.runs.data_checks import warn_resumed_manifest
from fer_lightning.runs.run_checkpoint import LAST, check_resumable


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, datamodule: ManifestDataModule) -> str | None:
    """The checkpoint ``fit`` resumes from; None to start fresh.

    ``last`` resumes the run dir's ``checkpoints/last.ckpt`` and, like Lightning's own ``ckpt_path="last"``,
    starts from scratch with a warning when the run was killed before writing one, so a requeue script can
    always pass it. A checkpoint of another modality is refused; one whose manifest changed since is resumed
    with a warning.
    """
    if ckpt_path is None:
        requeued = _requeued_from(output_dir)
        if requeued is None:
            return None
        print(f"warning: {requeued}; resuming from {output_dir / LAST}", file=sys.stderr, flush=True)
        ckpt_path = "last"
    if str(ckpt_path) == "last":
        path = output_dir / LAST
        if not path.is_file():
            print(f"warning: ckpt_path=last: no {path} yet; training from scratch", file=sys.stderr, flush=True)
            return None
    else:
        path = Path(str(ckpt_path)).expanduser()
    warn_resumed_manifest(datamodule, check_resumable(path, datamodule.modality), path)
    return str(path)


def _requeued_from(output_dir: Path) -> str | None:
    """Why a start without ``ckpt_path`` resumes the run dir's last.ckpt, or None (start fresh): the run was
    preempted and saved (``preempted.json``), or SLURM requeued the job (``SLURM_RESTART_COUNT``)."""
    if not (output_dir / LAST).is_file():
        return None
    if (output_dir / LAST.parent / PREEMPTED).is_file():
        return f"{output_dir} was preempted"
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    if restarts.isdigit() and int(restarts) > 0:
        return f"SLURM requeued this job (restart {restarts})"
    return None
