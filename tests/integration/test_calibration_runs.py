"""Temperature scaling through evaluate on a trained tiny run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fer_lightning.calibration import (
    fit_temperature,
    sidecar_path,
    store,
    stored_temperature,
)
from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.runs import calibrate
from fer_lightning.runtime import rescale
from tests.helpers.eval_runs import compose_app, isolated_checkpoint, tiny_run


def test_a_stored_temperature_applies_only_to_the_weights_it_was_fitted_for(tmp_path, capsys):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    assert stored_temperature(ckpt) is None  # never calibrated
    assert store(ckpt, {"temperature": 1.5}) == sidecar_path(ckpt) == tmp_path / "checkpoints" / "last.calibration.json"
    assert stored_temperature(ckpt) == 1.5
    ckpt.write_bytes(b"resumed and overwritten")
    assert stored_temperature(ckpt) is None
    assert "was fitted for other weights than last.ckpt now holds; not applied" in capsys.readouterr().err
    sidecar_path(ckpt).write_text(json.dumps({"temperature": -1, "checkpoint_sha1": "x"}))
    with pytest.raises(FERError, match=r"temperature=-1\.0 is not a positive number"):
        stored_temperature(ckpt)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, data_dir):
    # its own run dir: calibrate=temperature stores the temperature beside the checkpoint
    return isolated_checkpoint(tiny_run(tmp_path_factory, data_dir), tmp_path_factory.mktemp("calibrated_run"))


def _split_ids(data_dir, split: str) -> set[str]:
    with open(data_dir / "synthetic" / "manifest.csv") as f:
        return {r["sample_id"] for r in csv.DictReader(f) if r["split"] == split}


def test_evaluate_fits_the_temperature_on_validation_only(ckpt, data_dir, tmp_path, monkeypatch):
    seen = []
    original = calibrate.fit_outcome
    monkeypatch.setattr(calibrate, "fit_outcome", lambda outcome: seen.append(outcome) or original(outcome))
    out = tmp_path / "calibrated"
    results = evaluate(compose_app("eval", [f"ckpt_path={ckpt}", "calibrate=temperature"], out))
    assert len(seen) == 1
    fitted_on = set(seen[0].sample_ids)
    assert fitted_on == _split_ids(data_dir, "val") and not fitted_on & _split_ids(data_dir, "test")

    # the recorded temperature is the one the validation predictions give, and the test probabilities carry it
    val = evaluate(compose_app("eval", [f"ckpt_path={ckpt}", "split=val"], tmp_path / "val"))
    with open(tmp_path / "val" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    probs = np.array([[float(r[f"p_{c}"]) for c in val["classes"]] for r in rows])
    labels = np.array([val["classes"].index(r["label"]) for r in rows])
    t = results["temperature"]
    assert t == pytest.approx(fit_temperature(probs, labels), rel=1e-3)
    record = results["calibration"]
    assert record["fitted_on"] == "val" and record["val_n"] == len(rows) and record["tested_split"] == "test"
    assert record["val_nll_after"] <= record["val_nll_before"] + 1e-9
    assert results["test"]["ece"] == pytest.approx(record["ece_after"])

    raw = evaluate(compose_app("eval", [f"ckpt_path={ckpt}"], tmp_path / "raw"))
    assert record["ece_before"] == pytest.approx(raw["test"]["ece"])
    assert raw["temperature"] is None and raw["calibration"] is None
    assert results["test"]["accuracy"] == raw["test"]["accuracy"]  # one temperature keeps every prediction
    with open(tmp_path / "raw" / "predictions.csv") as f:
        raw_rows = list(csv.DictReader(f))
    with open(out / "predictions.csv") as f:
        cal_rows = list(csv.DictReader(f))
    raw_p = np.array([[float(r[f"p_{c}"]) for c in raw["classes"]] for r in raw_rows])
    cal_p = np.array([[float(r[f"p_{c}"]) for c in raw["classes"]] for r in cal_rows])
    assert np.allclose(cal_p, rescale(raw_p, t), atol=2e-5)
    assert (out / "reliability.png").stat().st_size > 0 and (out / "confusion_matrix.png").is_file()

    stored = json.loads(sidecar_path(ckpt).read_text())
    assert stored["temperature"] == t and stored["fitted_on"] == "val"


def test_calibration_keys_under_a_missing_camera_and_bad_values(ckpt, tmp_path):
    results = evaluate(compose_app("eval", [f"ckpt_path={ckpt}", "missing=infrared"], tmp_path / "missing"))
    test = results["test"]
    assert {"ece", "ece_ci95", "nll", "brier"} <= set(test) and 0 <= test["ece"] <= 1 and test["nll"] > 0
    with pytest.raises(FERError, match="calibrate=platt: use temperature"):
        evaluate(compose_app("eval", [f"ckpt_path={ckpt}", "calibrate=platt"], tmp_path / "bad"))
    with pytest.raises(FERError, match="calibrate=temperature split=val: the temperature is fitted on the valid"):
        evaluate(compose_app("eval", [f"ckpt_path={ckpt}", "calibrate=temperature", "split=val"], tmp_path / "v"))
