"""Callbacks in a training run: the offline wandb run's test tables and examples."""

from __future__ import annotations

import pytest

from fer_lightning.runs import train_and_test
from tests.conftest import TINY, compose_cfg


@pytest.mark.slow
def test_offline_wandb_run_gets_test_tables_and_examples(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg(
        [
            *TINY,
            "logger=wandb",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "+trainer.limit_val_batches=1",
        ],
        tmp_path,
        data_dir,
    )
    results, _ = train_and_test(cfg)
    from fer_lightning.loggers import finish_wandb

    finish_wandb()
    assert (tmp_path / "curves.png").is_file()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    tables = [p.name for p in (media / "table" / "test").glob("*.table.json")]
    assert any(t.startswith("per_class") for t in tables) and any(t.startswith("confusion_matrix") for t in tables)
    test = results["test"]
    wrong = test["n"] - round(test["accuracy"] * test["n"])
    assert len(list((media / "images" / "test").glob("misclassified_*.png"))) == min(wrong, 8)
