"""Epochs of several passes, and the training loader's position inside an epoch survives a checkpoint. A preempted
job that saves and resumes exactly: tests/integration/test_preemption_runs.py."""

from __future__ import annotations

import numpy as np
import torch

from fer_lightning.budget import MIN_EPOCH_STEPS, auto_passes
from fer_lightning.data.datasets import ResumableLoader, SeededSampler


def test_one_pass_draws_what_the_sampler_always_drew_and_more_passes_cover_each_sample_once_per_pass():
    one = list(SeededSampler(10, seed=3, shuffle=True))
    rng = np.random.default_rng([3, 0])
    order, seeds = rng.permutation(10), None
    seeds = rng.integers(0, 2**31, size=10)
    assert one == list(zip(order.tolist(), seeds.tolist(), strict=True))
    sampler = SeededSampler(10, seed=3, shuffle=True, passes=3)
    draws = list(sampler)
    assert len(sampler) == len(draws) == 30
    for p in range(3):
        assert sorted(i for i, _ in draws[10 * p : 10 * (p + 1)]) == list(range(10))
    assert len({s for _, s in draws}) == 30, "each draw has its own augmentation seed"
    sampler.set_epoch(1)
    assert list(sampler) != draws


def test_auto_passes_make_short_epochs_longer_only_in_a_step_budget():
    assert auto_passes({"steps": None}, steps_per_pass=7) == 1
    # VIRI-like: 393 images at batch 64 are 7 steps a pass
    passes = auto_passes({"steps": 8000, "val_checks": 50}, steps_per_pass=7)
    epoch = passes * 7
    assert MIN_EPOCH_STEPS - 7 <= epoch <= 8000 // 50
    assert -(-8000 // epoch) * epoch <= 8000 * 1.01  # whole epochs overshoot the budget by at most 1 %
    # never longer than the steps between two validation checks
    assert auto_passes({"steps": 100, "val_checks": 10}, steps_per_pass=7) == 1
    assert auto_passes({"steps": 8000, "val_checks": 50}, steps_per_pass=500) == 1
    # nor overshoot the budget: 9 steps of 2-step passes run 10 steps in 1-pass epochs, 16 in 4-pass ones
    assert auto_passes({"steps": 9}, steps_per_pass=2) == 1


def test_resumable_loader_skips_the_batches_a_checkpoint_says_were_trained():
    class Draws(torch.utils.data.Dataset):  # each item is the (index, seed) draw itself
        def __len__(self):
            return 40

        def __getitem__(self, draw):
            return draw

    data = Draws()

    def loader(progress=None):
        sampler = SeededSampler(40, seed=0, shuffle=True, passes=2)
        return ResumableLoader(data, batch_size=8, sampler=sampler, collate_fn=lambda b: b, progress=progress)

    full = loader()
    full.sampler.set_epoch(2)
    epoch2 = list(full)
    state = loader(progress=lambda: (2, 3)).state_dict()
    assert state == {"epoch": 2, "batches": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    assert list(resumed) == epoch2[3:]
    assert len(list(resumed)) == len(epoch2), "only the first epoch after the resume skips"
    # a checkpoint written at the end of epoch 2: the resumed run starts epoch 3 from its first batch
    at_end = loader()
    at_end.load_state_dict({"epoch": 2, "batches": len(epoch2)})
    reference = loader()
    reference.sampler.set_epoch(3)
    assert list(at_end) == list(reference)
