"""A fixed-seed train, evaluate and predict must write the same records as the stored ones, keys and values.

Refactors promise not to change what a run writes. This pins results.json, manifest.csv, predictions.csv and
predict's JSON for one small fusion run. When a change is meant to alter them (a new column, a new key), rewrite
the reference with ``FER_UPDATE_GOLDEN=1 python -m pytest tests/integration/test_outputs_unchanged.py`` and say why
in the commit.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

GOLDEN = REPO / "tests" / "data" / "golden_outputs.json"
RUN = [
    *TINY,
    "budget.steps=6",
    "budget.val_checks=2",
    "logger=none",
    "trainer.accelerator=cpu",
    "seed=3",
]
# Wall-clock time is the only value a rerun may change.
VOLATILE = {"train_seconds"}


def _command(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"fer_lightning.{module}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _portable(value, tmp: str):
    """Replaces the test's temporary folder by a fixed name and drops wall-clock keys."""
    if isinstance(value, dict):
        return {k: _portable(v, tmp) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_portable(v, tmp) for v in value]
    if isinstance(value, str):
        return value.replace(tmp, "<tmp>")
    return value


def _outputs(tmp_path: Path) -> dict:
    tmp = str(tmp_path)
    data, run, evaluated = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    _command("train", *RUN, f"paths.data_dir={data}", f"hydra.run.dir={run}")
    results = json.loads((run / "results.json").read_text())
    _command("evaluate", f"ckpt_path={results['checkpoint']}", "trainer.accelerator=cpu", f"hydra.run.dir={evaluated}")
    manifest = data / "synthetic" / "manifest.csv"
    first = _csv(manifest)[0]
    printed = _command(
        "predict",
        f"ckpt_path={results['checkpoint']}",
        f"visible={manifest.parent / first['visible']}",
        f"infrared={manifest.parent / first['infrared']}",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    prediction = json.loads(printed[printed.index("{") :])
    return _portable(
        {
            "train_results": results,
            "evaluate_results": json.loads((evaluated / "results.json").read_text()),
            "manifest": _csv(manifest),
            "train_predictions": _csv(run / "predictions.csv"),
            "evaluate_predictions": _csv(evaluated / "predictions.csv"),
            "predict": prediction,
        },
        tmp,
    )


def _differences(expected, actual, where: str = "") -> list[str]:
    """Every place where the two records differ; floats (and float cells) compare to 1e-5."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}.{k}: missing" for k in expected.keys() - actual.keys()]
        out += [f"{where}.{k}: new key" for k in actual.keys() - expected.keys()]
        for key in expected.keys() & actual.keys():
            out += _differences(expected[key], actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items, now {len(actual)}"]
        pairs = enumerate(zip(expected, actual, strict=True))
        return [d for i, (e, a) in pairs for d in _differences(e, a, f"{where}[{i}]")]
    if expected == actual:
        return []
    try:
        if math.isclose(float(expected), float(actual), rel_tol=1e-5, abs_tol=1e-5):
            return []
    except (TypeError, ValueError):
        pass
    return [f"{where}: {expected!r} -> {actual!r}"]


@pytest.mark.slow
def test_a_fixed_seed_run_writes_the_stored_records(tmp_path):
    actual = _outputs(tmp_path)
    if os.environ.get("FER_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    differences = _differences(expected, actual)
    assert not differences, "\n".join(differences[:40])
