"""Robustness evaluation: one modality corrupted or missing at test time, recorded, and the grid command."""

from __future__ import annotations

import csv
import sys

import pytest

from fer_lightning.data.corruptions import KINDS, register_corruption
from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.runs.robustness import robustness_grid
from tests.helpers.eval_runs import compose_app, isolated_checkpoint, tiny_run


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, data_dir):
    return tiny_run(tmp_path_factory, data_dir) / "checkpoints" / "last.ckpt"


def _printed(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())  # the Rich table wraps a long title


def test_evaluate_with_a_corruption_records_it_and_changes_the_predictions(ckpt, tmp_path, capsys):
    clean = evaluate(compose_app("eval", [f"ckpt_path={ckpt}"], tmp_path / "clean"))
    assert "synthetic · fusion · seed 0 · test n=15 ┏" in _printed(capsys)  # clean: no condition in the heading
    args = [f"ckpt_path={ckpt}", "corrupt.infrared=dead", "corrupt.severity=5", "corrupt.seed=1"]
    dead = evaluate(compose_app("eval", args, tmp_path / "dead"))
    # the heading says what was tested, not the same words as a clean test
    assert "synthetic · fusion · seed 0 · test n=15 (infrared: dead, severity 5)" in _printed(capsys)
    assert clean["corruption"] is None
    assert dead["corruption"] == {"visible": None, "infrared": "dead", "severity": 5, "seed": 1, "missing": None}
    assert dead["test"]["n"] == clean["test"]["n"]
    probs = [(tmp_path / d / "predictions.csv").read_text() for d in ("clean", "dead")]
    assert probs[0] != probs[1]  # a constant thermal image changes what the fused model outputs
    again = evaluate(compose_app("eval", args, tmp_path / "again"))
    assert (tmp_path / "again" / "predictions.csv").read_text() == probs[1]  # deterministic
    assert again["test"]["confusion_matrix"] == dead["test"]["confusion_matrix"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["corrupt.infrared=fog"], "corrupt.infrared=fog: unknown corruption; use one of noise, blur"),
        (["corrupt.infrared=noise", "corrupt.severity=9"], "corrupt.severity=9: use an integer from 0"),
    ],
)
def test_bad_corruption_settings_are_one_line(ckpt, tmp_path, args, message):
    with pytest.raises(FERError, match=message) as exc:
        evaluate(compose_app("eval", [f"ckpt_path={ckpt}", *args], tmp_path))
    assert "\n" not in str(exc.value)


def test_missing_modality_is_evaluated_by_gated_and_refused_by_interleave(
    ckpt, tmp_path_factory, data_dir, tmp_path, capsys
):
    # the default fusion (gated) predicts from the photo alone, and says so in results.json and its heading
    results = evaluate(compose_app("eval", [f"ckpt_path={ckpt}", "missing=infrared"], tmp_path / "gated"))
    assert results["corruption"]["missing"] == "infrared" and results["test"]["n"] > 0
    assert "seed 0 · test n=15 (infrared missing)" in _printed(capsys)
    interleave = tiny_run(tmp_path_factory, data_dir, "fusion", "model.fusion=interleave") / "checkpoints" / "last.ckpt"
    with pytest.raises(FERError, match="missing=infrared: this fusion model cannot predict without it") as exc:
        evaluate(compose_app("eval", [f"ckpt_path={interleave}", "missing=infrared"], tmp_path / "interleave"))
    assert "\n" not in str(exc.value)


def test_the_grid_writes_its_table_and_plot(ckpt, tmp_path, capsys, monkeypatch):
    args = [f"ckpt_path={ckpt}", "kinds=[noise,dead]", "severities=[1,5]", "modalities=[infrared]"]
    # on a terminal, with the run's progress bar on: still no bar per test, one labelled line per condition
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    rows = robustness_grid(compose_app("robustness", [*args, "+trainer.enable_progress_bar=true"], tmp_path))
    out, err = capsys.readouterr()
    assert "Testing" not in out + err
    lines = [line for line in out.splitlines() if line.startswith("robustness ")]
    assert lines[0].startswith("robustness 1/6 fusion-gated, clean: accuracy ")
    assert lines[1].startswith("robustness 2/6 fusion-gated, infrared: noise, severity 1: accuracy ")
    assert lines[5].startswith("robustness 6/6 fusion-gated, infrared missing: accuracy ") and "(n=15)" in lines[5]
    with open(tmp_path / "robustness.csv") as f:
        table = list(csv.DictReader(f))
    # clean + kinds x severities + the infrared image missing (the default gated fusion can do without it)
    assert len(table) == len(rows) == 1 + 2 * 2 + 1
    assert table[0]["kind"] == "none" and all(r["modality"] == "infrared" for r in table[1:])
    assert table[-1]["kind"] == "missing"
    grid = {(r["kind"], r["severity"]) for r in table[1:-1]}
    assert grid == {("noise", "1"), ("noise", "5"), ("dead", "1"), ("dead", "5")}
    assert all(0 <= float(r["accuracy_lo"]) <= float(r["accuracy"]) <= float(r["accuracy_hi"]) <= 1 for r in table)
    assert all(0 <= float(r["ece_lo"]) <= float(r["ece"]) <= float(r["ece_hi"]) <= 1 for r in table)
    assert all(float(r["nll"]) > 0 and 0 <= float(r["brier"]) <= 2 and r["temperature"] == "" for r in table)
    assert (tmp_path / "robustness.png").stat().st_size > 0


def test_a_registered_corruption_joins_the_grid(ckpt, tmp_path):
    """One function and its registration: the default grid (kinds=null) tests it, and evaluate takes it."""

    @register_corruption("toy_dark")
    def dark(img, level, rng):
        return img * (1 - 0.2 * (level + 1))

    try:
        args = [f"ckpt_path={ckpt}", "severities=[5]", "modalities=[infrared]", "include_missing=false"]
        rows = robustness_grid(compose_app("robustness", args, tmp_path / "grid"))
        assert [r["kind"] for r in rows] == ["none", *KINDS]
        assert rows[-1]["kind"] == "toy_dark" and rows[-1]["n"] == rows[0]["n"]
        dark_eval = ["corrupt.infrared=toy_dark", "corrupt.severity=5"]
        results = evaluate(compose_app("eval", [f"ckpt_path={ckpt}", *dark_eval], tmp_path / "eval"))
        assert results["corruption"]["infrared"] == "toy_dark"
        assert results["test"]["accuracy"] == rows[-1]["accuracy"]
    finally:
        del KINDS["toy_dark"]


def test_the_calibrated_grid_uses_one_validation_temperature(ckpt, tmp_path):
    """calibrate=temperature: every cell scaled by the temperature evaluate fits; the clean cell is evaluate's."""
    ckpt = isolated_checkpoint(ckpt.parent.parent, tmp_path / "run")
    args = [f"ckpt_path={ckpt}", "calibrate=temperature"]
    evaluated = evaluate(compose_app("eval", args, tmp_path / "eval"))
    cfg = compose_app("robustness", [*args, "kinds=[dead]", "severities=[5]", "modalities=[infrared]"], tmp_path)
    rows = robustness_grid(cfg)
    assert {r["temperature"] for r in rows} == {evaluated["temperature"]}
    clean = rows[0]
    assert clean["kind"] == "none" and clean["accuracy"] == evaluated["test"]["accuracy"]
    assert clean["ece"] == pytest.approx(evaluated["test"]["ece"])
    assert clean["nll"] == pytest.approx(evaluated["test"]["nll"])


def test_a_modality_the_model_does_not_read_is_refused(tmp_path_factory, data_dir, tmp_path):
    """Corrupting a camera the model never sees would report its clean accuracy as robustness."""
    visible = tiny_run(tmp_path_factory, data_dir, "visible") / "checkpoints" / "last.ckpt"
    cfg = compose_app("robustness", [f"ckpt_path={visible}", "modalities=[infrared]"], tmp_path)
    with pytest.raises(FERError) as exc:
        robustness_grid(cfg)
    message = str(exc.value)
    assert message.startswith("modalities=[infrared]: ") and "\n" not in message
    assert "is a visible model and reads no infrared image; use modalities=[visible] or null" in message
    assert not (tmp_path / "robustness.csv").exists()
