"""report: results.json files grouped into a Markdown table with mean ± std and the study's number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fer_lightning.analysis.results_table import report
from fer_lightning.errors import FERError
from fer_lightning.report import main


def _results(dataset: str, modality: str, seed: int, accuracy: float, n: int = 90, **extra) -> dict:
    return {
        "dataset": dataset,
        "modality": modality,
        "seed": seed,
        "classes": ["a", "b"],
        "experiment": None,
        "test": {
            "n": n,
            "accuracy": accuracy,
            "accuracy_ci95": [accuracy - 0.1, accuracy + 0.1],
            "f1_macro": accuracy - 0.05,
            "f1_weighted": accuracy - 0.02,
        },
        **extra,
    }


def _write(root: Path, name: str, results: dict) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(results))


def test_groups_average_and_show_the_published_number(tmp_path, capsys):
    _write(tmp_path, "a/0", _results("viri", "fusion", 0, 0.80))
    _write(tmp_path, "a/1", _results("viri", "fusion", 1, 0.90, n=88))
    _write(tmp_path, "b", _results("synthetic", "visible", 0, 0.5))
    _write(tmp_path, "c", _results("viri", "fusion", 0, 0.1, source="evaluate"))  # not counted twice
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    text, rows = report(tmp_path)
    out, err = capsys.readouterr()
    assert text in out
    viri = next(r for r in rows if r["dataset"] == "viri")
    assert viri["runs"] == 2 and viri["test_n"] == 89
    assert "| viri | fusion | - | 2 | 89 | 85.00 ± 7.07 | 80.00 ± 7.07 | 83.00 ± 7.07 | 84.44 |" in text
    assert "| synthetic | visible | - | 1 | 90 | 50.00 | 45.00 | 48.00 | - |" in text
    assert "broken" in err and "evaluate result" in err
    assert (tmp_path / "report.md").read_text().startswith(text)
    with open(tmp_path / "report.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_folder_without_results_says_so(tmp_path, capsys):
    with pytest.raises(FERError, match=r"no results\.json"):
        report(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
