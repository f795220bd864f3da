"""Resumes that replay the same random draws."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


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
