"""dataset=synthetic_small: the small-data regime (issue 14) composes, prepares into its own folder, and splits
by subject into 120 / 30 / 90."""

from __future__ import annotations

import json
from collections import Counter

from fer_lightning.runs import build_datamodule
from tests.conftest import compose_cfg


def test_small_regime_counts_and_subject_held_out_split(tmp_path):
    cfg = compose_cfg(
        ["dataset=synthetic_small", "modality=visible", "dataset.generator.image_size=24", "dataset.image_size=16"],
        tmp_path / "run",
        tmp_path / "data",
    )
    assert cfg.dataset.name == "synthetic_small" and cfg.dataset.split.group_regex  # inherits synthetic's grouping
    assert list(cfg.dataset.generator.difficulty.intensity) == [0.6, 1.0]
    dm = build_datamodule(cfg.dataset)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.root == tmp_path / "data" / "synthetic_small"
    assert not (tmp_path / "data" / "synthetic").exists()
    assert {s: len(dm._datasets[s]) for s in ("train", "val", "test")} == {"train": 120, "val": 30, "test": 90}
    subjects = {s: {r["subject"] for r in dm.rows if r["split"] == s} for s in ("train", "val", "test")}
    assert [len(subjects[s]) for s in ("train", "val", "test")] == [8, 2, 6]
    assert not (subjects["train"] & subjects["test"]) and not (subjects["val"] & subjects["test"])
    # balanced classes in every split
    for s in ("train", "val", "test"):
        assert len(set(Counter(r["label"] for r in dm.rows if r["split"] == s).values())) == 1
    assert json.loads((dm.root / "generator.json").read_text())["n_subjects"] == 16
