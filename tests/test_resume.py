"""Atomic checkpoint writes, and a run killed with SIGKILL that resumes to the same final metrics."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

from fer_lightning.callbacks.checkpoint import AtomicCheckpointIO, AtomicModelCheckpoint
from fer_lightning.callbacks.config_history import RunConfigHistory
from fer_lightning.callbacks.step_seed import StepSeed
from tests.helpers.commands import CLI, prepare_tiny, signal_when, train_process


def fake_trainer(save) -> SimpleNamespace:
    return SimpleNamespace(
        save_checkpoint=save,
        is_global_zero=True,
        global_step=7,
        loggers=[],
        strategy=SimpleNamespace(barrier=lambda *a: None, reduce_boolean_decision=lambda d, all: d),
    )


def test_a_save_killed_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    torch.save({"epoch": 1}, target)
    cb = AtomicModelCheckpoint(dirpath=tmp_path)
    io = AtomicCheckpointIO()
    written = []

    def dies_while_writing(obj, path):
        written.append(Path(path))
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # stands in for SIGKILL: the process never reaches the rename

    monkeypatch.setattr(torch, "save", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        cb._save_checkpoint(fake_trainer(lambda path, weights_only=False: io.save_checkpoint({}, path)), str(target))
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert written[0].parent == tmp_path and written[0] != target, "the half file is a sibling, not the target"

    def writes(path, weights_only=False):
        io.save_checkpoint({"epoch": 2}, path)

    cb._save_checkpoint(fake_trainer(writes), str(target))
    assert torch.load(target, weights_only=True) == {"epoch": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"], "the temp file is renamed, not copied"
    assert cb._last_checkpoint_saved == str(target) and cb._last_global_step_saved == 7


def test_a_killed_saves_leftover_is_removed_when_the_run_restarts(tmp_path):
    leftover = tmp_path / ".last.ckpt.999999999.tmp"  # io.temp_sibling's name, from a writer long gone
    leftover.write_bytes(b"half")
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, max_epochs=1)
    cb = AtomicModelCheckpoint(dirpath=tmp_path)
    cb.setup(trainer, None, "fit")
    assert not leftover.exists()
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_superseded_best_is_removed_only_after_last_is_written(tmp_path):
    cb = AtomicModelCheckpoint(dirpath=tmp_path, save_last=True)
    old = tmp_path / "best-old.ckpt"
    old.write_bytes(b"x")
    order = []

    def save(path, weights_only=False):
        order.append(Path(path).name)
        Path(path).write_bytes(b"ckpt")

    trainer = fake_trainer(save)
    trainer.strategy.remove_checkpoint = lambda path: (order.append(f"rm {Path(path).name}"), os.remove(path))
    cb._remove_checkpoint(trainer, str(old))
    assert old.exists(), "removal must wait for last.ckpt"
    cb._save_last_checkpoint(trainer, {"epoch": torch.tensor(1), "step": torch.tensor(7)})
    assert order == ["last.ckpt", "rm best-old.ckpt"] and not old.exists()


def test_step_seed_depends_only_on_seed_epoch_and_batch():
    seeder = StepSeed(seed=5)
    trainer = SimpleNamespace(current_epoch=2, global_rank=0)

    def draw(epoch, batch_idx):
        torch.manual_seed(12345 + batch_idx)  # whatever happened before must not matter
        trainer.current_epoch = epoch
        seeder.on_train_batch_start(trainer, None, None, batch_idx)
        return torch.rand(4)

    assert torch.equal(draw(2, 1), draw(2, 1))
    assert not torch.equal(draw(2, 1), draw(2, 2)) and not torch.equal(draw(2, 1), draw(3, 1))
    assert not torch.equal(
        draw(2, 1), (StepSeed(seed=6).on_train_batch_start(trainer, None, None, 1), torch.rand(4))[1]
    )


def test_resume_keeps_the_previous_hydra_config_and_names_what_changed(tmp_path, caplog):
    saved = tmp_path / ".hydra"
    saved.mkdir()
    (saved / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "ckpt_path": None, "trainer": {"max_epochs": 2}}))
    (saved / "overrides.yaml").write_text("- trainer.max_epochs=2\n")
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "seed": 0,
            "ckpt_path": "last",
            "trainer": {"max_epochs": 4},
            "hydra": {"run": {"dir": str(tmp_path)}, "output_subdir": ".hydra"},
        }
    )
    with caplog.at_level("WARNING"):
        RunConfigHistory().on_run_start(cfg)
    kept = saved / "history" / "000"
    assert yaml.safe_load((kept / "config.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert (kept / "overrides.yaml").read_text() == "- trainer.max_epochs=2\n"
    assert "trainer.max_epochs: 2 -> 4" in caplog.text and "ckpt_path" not in caplog.text.split("differs")[1]


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
