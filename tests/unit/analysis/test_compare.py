"""Paired comparison of two models' predictions on the same samples."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fer_lightning.analysis.compare import compare
from fer_lightning.compare import main
from fer_lightning.errors import FERError


def write_predictions(path: Path, correct: list[bool], labels: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = labels or ["Happy"] * len(correct)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "label", "pred", "p_Happy", "p_Sad", "visible", "infrared"])
        for i, (ok, label) in enumerate(zip(correct, labels, strict=True)):
            w.writerow([f"s{i:03d}", label, label if ok else "Sad", "0.5", "0.5", "", ""])
    return path


def test_a_clearly_better_model_has_an_interval_above_zero(tmp_path):
    a = write_predictions(tmp_path / "a" / "predictions.csv", [True] * 90 + [False] * 10)
    b = write_predictions(tmp_path / "b.csv", [True] * 60 + [False] * 40)
    r = compare(a.parent, b)["all"]  # a folder holding predictions.csv works too
    assert r["n"] == 100 and r["accuracy_a"] == 0.9 and r["accuracy_b"] == 0.6
    assert r["difference"] == pytest.approx(0.3)
    lo, hi = r["difference_ci95"]
    assert 0 < lo < 0.3 < hi
    assert (r["a_right_b_wrong"], r["b_right_a_wrong"]) == (30, 0)


def test_the_same_predictions_differ_by_exactly_zero(tmp_path):
    a = write_predictions(tmp_path / "a.csv", [True, False] * 20)
    r = compare(a, a)["all"]
    assert r["difference"] == 0 and r["difference_ci95"] == [0.0, 0.0]


def test_groups_by_a_per_sample_column(tmp_path):
    a = write_predictions(tmp_path / "a.csv", [True] * 10)
    b = write_predictions(tmp_path / "b.csv", [False] * 4 + [True] * 6)
    by = tmp_path / "conditions.csv"
    by.write_text("sample_id,visible_condition\n" + "".join(f"s{i:03d},{'dark' if i < 4 else ''}\n" for i in range(10)))
    rows = compare(a, b, by, "visible_condition")
    assert rows["visible_condition=dark"]["n"] == 4 and rows["visible_condition=dark"]["difference"] == 1.0
    assert rows["visible_condition=(none)"]["difference"] == 0.0


def test_bad_input_is_one_line_naming_the_problem(tmp_path, capsys):
    a = write_predictions(tmp_path / "a.csv", [True] * 5)
    b = write_predictions(tmp_path / "b.csv", [True] * 6)
    with pytest.raises(FERError, match="different samples"):
        compare(a, b)
    relabelled = write_predictions(tmp_path / "c.csv", [True] * 5, ["Sad"] * 5)
    with pytest.raises(FERError, match="different labels"):
        compare(a, relabelled)
    with pytest.raises(FERError, match="needs columns"):
        compare(a, a, a, "visible_condition")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing"), str(a)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing: no predictions file" in err[0] and "fer_lightning.evaluate" in err[0]


def test_cli_prints_a_table(tmp_path, capsys):
    a = write_predictions(tmp_path / "a.csv", [True] * 8 + [False] * 2)
    b = write_predictions(tmp_path / "b.csv", [True] * 5 + [False] * 5)
    main([str(a), str(b)])
    out = capsys.readouterr().out
    assert "| all | 10 | 0.800 | 0.500 | +0.300" in out


def test_paired_interval_is_the_previous_numpy_bootstrap_and_degenerate_inputs_are_points():
    import numpy as np

    from fer_lightning.analysis.compare import paired

    rng = np.random.default_rng(0)
    a, b = rng.random(60) < 0.8, rng.random(60) < 0.6
    diff = a.astype(float) - b.astype(float)
    boots = diff[np.random.default_rng(4).integers(0, 60, size=(10_000, 60))].mean(axis=1)
    assert paired(a, b, seed=4)["difference_ci95"] == pytest.approx(np.percentile(boots, [2.5, 97.5]).tolist())
    assert paired(np.array([True]), np.array([False]))["difference_ci95"] == [1.0, 1.0]
    assert paired(np.ones(5, bool), np.ones(5, bool))["difference_ci95"] == [0.0, 0.0]
