"""A run killed with SIGKILL resumes to the same final metrics."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.commands import CLI, prepare_tiny, signal_when, train_process


@pytest.mark.slow
def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path, data_dir):
    prepare_tiny(data_dir, tmp_path)
    common = [*CLI, f"paths.data_dir={data_dir}", "trainer.max_epochs=5"]
    full = tmp_path / "full"
    killed = tmp_path / "killed"
    reference = train_process([*common, f"hydra.run.dir={full}"])
    victim = train_process([*common, f"hydra.run.dir={killed}"])
    last = killed / "checkpoints" / "last.ckpt"
    signal_when(last, victim, signal.SIGKILL, timeout=900, poll=0.02)
    out, _ = victim.communicate()
    assert last.exists(), out
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    epoch_at_kill = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert epoch_at_kill < 4

    resumed = train_process([*common, f"hydra.run.dir={killed}", "ckpt_path=last"])
    out_resumed, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out_resumed
    out_full, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out_full

    a = json.loads((full / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert b["epochs_trained"] == a["epochs_trained"] == 5
    assert b["best_val_accuracy"] == a["best_val_accuracy"]
    assert Path(b["best_checkpoint"]).name == Path(a["best_checkpoint"]).name
    for key in ("n", "accuracy", "f1_macro", "f1_weighted", "confusion_matrix", "per_class"):
        assert b["test"][key] == a["test"][key], key
    # the same weights, not only the same rounded metrics
    wa = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    wb = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the first start's config is kept beside the resume's
    assert (killed / ".hydra" / "history" / "000" / "config.yaml").is_file()
    assert yaml.safe_load((killed / ".hydra" / "config.yaml").read_text())["ckpt_path"] == "last"


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_resumes_from_scratch(tmp_path, data_dir):
    """``ckpt_path=last`` always works, so a requeue script can pass it: with no checkpoint yet it warns and trains."""
    prepare_tiny(data_dir, tmp_path)
    common = [*CLI, f"paths.data_dir={data_dir}", "trainer.max_epochs=2"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference = train_process([*common, f"hydra.run.dir={full}"])
    victim = train_process([*common, f"hydra.run.dir={killed}"])
    started = killed / ".hydra" / "config.yaml"
    signal_when(started, victim, signal.SIGKILL, timeout=600, poll=0.01)
    victim.communicate()
    assert started.exists() and not (killed / "checkpoints" / "last.ckpt").exists()

    resumed = train_process([*common, f"hydra.run.dir={killed}", "ckpt_path=last"])
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out
    assert f"warning: ckpt_path=last: no {killed / 'checkpoints' / 'last.ckpt'} yet; training from scratch" in out
    out_full, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out_full
    a = json.loads((full / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert b["epochs_trained"] == a["epochs_trained"] == 2
    for key in ("n", "accuracy", "f1_macro", "confusion_matrix"):
        assert b["test"][key] == a["test"][key], key
