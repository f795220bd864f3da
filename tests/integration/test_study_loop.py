"""The study-faithful reference loop (fer_lightning/benchmarks/study_loop.py) runs on a prepared manifest and
applies the study's offline protocol: 26 training images per original, test scored with the best-validation weights."""

from __future__ import annotations

import json

from fer_lightning.benchmarks import study_loop
from fer_lightning.data.dataset_datamodules import SyntheticDataModule


def test_reference_loop_trains_on_26_copies_and_reports_test_accuracy(tmp_path):
    dm = SyntheticDataModule(
        data_dir=str(tmp_path),
        generator={"n_subjects": 6, "samples_per_class": 1, "image_size": 40},
        split={"group_regex": r"^(s\d+)_", "ratios": [0.34, 0.33, 0.33]},
    )
    dm.prepare_data()
    out = tmp_path / "ref.json"
    args = ["--manifest", str(dm.manifest_path), "--image-size", "32", "--epochs", "2", "--out", str(out)]
    study_loop.main(args)
    result = json.loads(out.read_text())
    assert result["n"] == 10 and 0 <= result["accuracy"] <= 1
    assert result["train_images"] == 26 * 10 and result["optimizer_steps"] == 2 * 5
    assert len(result["history"]) == 2 and result["best_epoch"] in result["tied_epochs"]
    # the later tied epoch is kept, as the study's loop did
    assert result["best_epoch"] == result["tied_epochs"][-1]
    assert result["accuracy"] == result["accuracy_tie_later"]
