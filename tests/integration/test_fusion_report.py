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


def test_allow_missing_predicts_a_gated_model_from_one_image(tmp_path, data_dir, tmp_path_factory, capsys):
    from fer_lightning.errors import FERError
    from fer_lightning.predict import predict
    from tests.helpers.eval_runs import compose_app, save_run_config, tiny_run

    run_dir = tmp_path / "gated"
    overrides = [*TINY, "logger=none", "modality=fusion", "model.fusion=gated", "trainer.max_epochs=1"]
    cfg = compose_cfg([*overrides, "+trainer.limit_train_batches=1"], run_dir, data_dir)
    train_and_test(cfg)
    save_run_config(cfg, run_dir)
    image = next((data_dir / "synthetic" / "visible").rglob("*.png"))
    args = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"visible={image}"]
    with pytest.raises(FERError, match=r"fusion model \(missing infrared\)"):  # refused by default
        predict(compose_app("predict", args, tmp_path / "p0"))
    out = predict(compose_app("predict", [*args, "allow_missing=true"], tmp_path / "p1"))
    assert out["missing"] == ["infrared"] and out["predicted_from"] == ["visible"]
    assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # the study's interleave cannot do without a modality: one line, even when allowed
    interleave = tiny_run(tmp_path_factory, data_dir, "fusion", "model.fusion=interleave") / "checkpoints" / "last.ckpt"
    with pytest.raises(FERError, match="cannot predict without infrared; only late and gated fusion can"):
        predict(compose_app("predict", [f"ckpt_path={interleave}", f"visible={image}", "allow_missing=true"], tmp_path))
