"""A callback that signals its own process mid-run, as a cluster preempting the job would; named by ``_target_``."""

from __future__ import annotations

import os
import signal

import lightning as L


class SendSignal(L.Callback):
    """Sends this process a signal after a given training step, as the cluster would."""

    def __init__(self, at_step: int, signum: str = "SIGUSR2"):
        self.at_step, self.signum = at_step, getattr(signal, signum)

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
