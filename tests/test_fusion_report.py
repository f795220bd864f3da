"""What a gated fusion run reports: per-sample camera weights in predictions.csv, their means in results.json."""

from __future__ import annotations

import csv
import json

import pytest

from fer_lightning.runs import train_and_test
from tests.conftest import TINY, compose_cfg


def test_gated_run_reports_which_camera_it_trusted(tmp_path, data_dir):
    cfg = compose_cfg([*TINY, "modality=fusion", "model.fusion=gated", "debug=fast"], tmp_path, data_dir)
    results, _ = train_and_test(cfg)
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == results["test"]["n"] > 0
    assert all(float(r["w_visible"]) + float(r["w_infrared"]) == pytest.approx(1.0, abs=1e-5) for r in rows)
    weights = json.loads((tmp_path / "results.json").read_text())["test"]["modality_weights"]
    mean_visible = sum(float(r["w_visible"]) for r in rows) / len(rows)
    assert weights["per_class"]["all"]["visible"] == pytest.approx(mean_visible, abs=1e-4)
    assert weights["per_class"]["all"]["n"] == len(rows)
    # the synthetic data's conditions: every tested sample falls in one group of each column
    for column in ("visible_condition", "infrared_condition"):
        assert weights[column]["all"]["n"] == len(rows)
