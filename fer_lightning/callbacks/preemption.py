"""A checkpoint on a cluster's pre-emption signal, then a clean exit the scheduler can requeue."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L

from fer_lightning.errors import FERError, Preempted
from fer_lightning.io import atomic_write_text

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
