"""A preempted job saves where it is and its requeued start resumes exactly; epochs of several passes; the
training loader's position inside an epoch survives a checkpoint."""

from __future__ import annotations

import json
import os
import signal

import lightning as L
import numpy as np
import pytest
import torch

from fer_lightning.budget import MIN_EPOCH_STEPS, auto_passes
from fer_lightning.callbacks.preemption import PREEMPTED
from fer_lightning.data.datasets import ResumableLoader, SeededSampler
from fer_lightning.errors import Preempted
from fer_lightning.runs import train_and_test
from tests.conftest import TINY, compose_cfg
from tests.helpers.commands import CLI, prepare_tiny, signal_when, train_process


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


class SendSignal(L.Callback):
    """Sends this process a signal after a given training step, as the cluster would."""

    def __init__(self, at_step: int, signum: str = "SIGUSR2"):
        self.at_step, self.signum = at_step, getattr(signal, signum)

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)


def test_the_signal_saves_then_hands_over_to_the_handler_installed_before(tmp_path, data_dir):
    """Under submitit the earlier handler requeues the job and exits; it runs after last.ckpt is written."""
    seen = []

    def requeue(signum, frame):
        last = tmp_path / "run" / "checkpoints" / "last.ckpt"
        seen.append((signum, torch.load(last, map_location="cpu", weights_only=True)["global_step"]))
        raise SystemExit(-1)

    overrides = [
        *TINY,
        "modality=visible",
        "logger=none",
        "trainer.max_epochs=3",
        "+callbacks.sender._target_=tests.test_preemption.SendSignal",
        "+callbacks.sender.at_step=5",
    ]
    cfg = compose_cfg(overrides, tmp_path / "run", data_dir)
    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(SystemExit):
            train_and_test(cfg)
        assert signal.getsignal(signal.SIGUSR2) is requeue, "the earlier handler is put back"
    finally:
        signal.signal(signal.SIGUSR2, previous)
    # the signal came after the preemption callback's check of step 5: it acts at the end of step 6
    assert seen == [(signal.SIGUSR2, 6)]
    marker = json.loads((tmp_path / "run" / "checkpoints" / PREEMPTED).read_text())
    assert marker["signal"] == "SIGUSR2" and marker["global_step"] == 6
    assert not (tmp_path / "run" / "results.json").exists()


def test_without_an_earlier_handler_the_command_stops_with_one_line(tmp_path, data_dir):
    overrides = [*TINY, "modality=visible", "logger=none", "trainer.max_epochs=3"]
    overrides += ["+callbacks.sender._target_=tests.test_preemption.SendSignal", "+callbacks.sender.at_step=2"]
    cfg = compose_cfg(overrides, tmp_path / "run", data_dir)
    with pytest.raises(Preempted, match=r"SIGUSR2 received: saved .*last\.ckpt at step 3; run the same command"):
        train_and_test(cfg)
    assert signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None)


@pytest.mark.slow
def test_a_preempted_run_started_again_resumes_to_the_uninterrupted_result(tmp_path, data_dir):
    prepare_tiny(data_dir, tmp_path)
    common = [c for c in CLI if "limit_" not in c]
    common += [f"paths.data_dir={data_dir}", "trainer.max_epochs=4", "dataset.passes_per_epoch=2"]
    full, preempted = tmp_path / "full", tmp_path / "preempted"
    reference = train_process([*common, f"hydra.run.dir={full}"])
    victim = train_process([*common, f"hydra.run.dir={preempted}"])
    last = preempted / "checkpoints" / "last.ckpt"
    signal_when(last, victim, signal.SIGUSR2, timeout=900)
    out, _ = victim.communicate(timeout=900)
    assert victim.returncode == 3, out
    assert "preempted: SIGUSR2 received: saved" in out and "Traceback" not in out
    assert (preempted / "checkpoints" / PREEMPTED).is_file() and not (preempted / "results.json").exists()
    step_at_stop = torch.load(last, map_location="cpu", weights_only=True)["global_step"]

    # the requeued job: the same command, no ckpt_path
    again = train_process([*common, f"hydra.run.dir={preempted}"])
    out_again, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out_again
    assert f"was preempted; resuming from {last}" in out_again
    assert not (preempted / "checkpoints" / PREEMPTED).exists()
    out_full, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out_full

    a = json.loads((full / "results.json").read_text())
    b = json.loads((preempted / "results.json").read_text())
    assert 0 < step_at_stop < a["budget"]["steps"]
    for key in ("n", "accuracy", "f1_macro", "confusion_matrix"):
        assert b["test"][key] == a["test"][key], key
    wa = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    wb = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
