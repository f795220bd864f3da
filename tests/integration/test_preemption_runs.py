"""A preempted run (SIGUSR1/SIGTERM) saves, hands over, and resumes to the uninterrupted result."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from fer_lightning.callbacks.preemption import PREEMPTED
from fer_lightning.errors import Preempted
from fer_lightning.runs import train_and_test
from tests.conftest import TINY, compose_cfg
from tests.helpers.commands import CLI, prepare_tiny, signal_when, train_process


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
        "+callbacks.sender._target_=tests.helpers.signals.SendSignal",
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
    overrides += ["+callbacks.sender._target_=tests.helpers.signals.SendSignal", "+callbacks.sender.at_step=2"]
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
