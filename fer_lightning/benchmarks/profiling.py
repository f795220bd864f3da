"""Where a benchmarked step's time goes: the fit's wall clock, and the time spent waiting for data."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.profilers import Profiler

from fer_lightning.benchmarks.study_pipeline import (
    sync,
)


class Timer(L.Callback):
    """Wall time and images of the training steps after ``warmup``."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.k, self.n, self.t0, self.t1 = warmup, device, 0, 0, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.k += 1
        if self.k == self.warmup:
            sync(self.device)
            self.t0 = time.perf_counter()
        elif self.k > self.warmup:
            self.n += int(batch["label"].shape[0])

    def on_train_end(self, trainer, pl_module) -> None:
        sync(self.device)
        self.t1 = time.perf_counter()


class DataWaitProfiler(Profiler):
    """Wall time the training loop spent waiting for its next batch: Lightning's ``train_dataloader_next`` action,
    everything between one step asking for a batch and getting it (loader restarts at epoch starts included)."""

    ACTION = "train_dataloader_next"

    def __init__(self) -> None:
        super().__init__()
        self.wait_s, self.batches, self._t0 = 0.0, 0, None

    def start(self, action_name: str) -> None:
        if action_name.endswith(self.ACTION):
            self._t0 = time.perf_counter()

    def stop(self, action_name: str) -> None:
        if action_name.endswith(self.ACTION) and self._t0 is not None:
            self.wait_s += time.perf_counter() - self._t0
            self.batches += 1
            self._t0 = None

    def summary(self) -> str:
        return f"waited {self.wait_s:.2f} s for {self.batches} training batches"
