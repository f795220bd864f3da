"""What resuming relies on: atomic checkpoint writes, the step seed, the kept Hydra config. A run killed with
SIGKILL that resumes to the same final metrics: tests/integration/test_resume_after_kill.py."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

from fer_lightning.callbacks.checkpoint import AtomicCheckpointIO, AtomicModelCheckpoint
from fer_lightning.callbacks.config_history import RunConfigHistory
from fer_lightning.callbacks.step_seed import StepSeed


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
