"""Paired comparison of two runs' predictions on the same test samples: accuracies, the accuracy difference with a
paired percentile bootstrap 95 % interval, and McNemar's discordant counts, over all samples and per group.
``python -m fer_lightning.compare`` is its command."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from fer_lightning.errors import FERError
from fer_lightning.metrics import bootstrap_interval

PREDICTIONS = "predictions.csv"
N_BOOTSTRAP = 10_000


def load_correct(path: Path) -> dict[str, tuple[str, bool]]:
    """``sample_id -> (label, prediction == label)`` from a predictions file or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS
    if not path.is_file():
        raise FERError(
            f"{path}: no predictions file; pass a training or evaluate run dir, or write one with "
            "python -m fer_lightning.evaluate ckpt_path=<ckpt>"
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("sample_id", "label", "pred") if c not in (reader.fieldnames or [])]
        if missing:
            raise FERError(f"{path}: missing column(s) {missing}; is it a predictions.csv from fer_lightning?")
        rows = {r["sample_id"]: (r["label"], r["pred"] == r["label"]) for r in reader}
    if any(label == "" for label, _ in rows.values()):
        raise FERError(f"{path}: predictions without true labels (from predict?); compare needs a test run's file")
    return rows


def paired(a: np.ndarray, b: np.ndarray, n_resamples: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Accuracies of two boolean correctness vectors over the same samples and their paired difference."""
    n = len(a)
    diff = a.astype(float) - b.astype(float)

    def mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(x - y, axis=axis)[None]

    ci = bootstrap_interval((a.astype(float), b.astype(float)), mean_difference, n_resamples, seed)[0] if n else None
    return {
        "n": n,
        "accuracy_a": float(a.mean()) if n else float("nan"),
        "accuracy_b": float(b.mean()) if n else float("nan"),
        "difference": float(diff.mean()) if n else float("nan"),
        "difference_ci95": [float("nan")] * 2 if ci is None else ci.tolist(),
        "a_right_b_wrong": int((a & ~b).sum()),
        "b_right_a_wrong": int((b & ~a).sum()),
    }


def compare(path_a: Path, path_b: Path, by: Path | None = None, column: str | None = None) -> dict:
    """The paired comparison over all shared samples (``"all"``), and per value of ``column`` in ``by``."""
    a, b = load_correct(path_a), load_correct(path_b)
    if a.keys() != b.keys():
        only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
        raise FERError(
            f"{path_a} and {path_b} cover different samples ({only_a} only in A, {only_b} only in B); "
            "evaluate both on the same dataset and split"
        )
    relabelled = [s for s in a if a[s][0] != b[s][0]]
    if relabelled:
        raise FERError(f"sample {relabelled[0]!r} has different labels in A and B; were they tested on one manifest?")
    groups: dict[str, list[str]] = {"all": sorted(a)}
    if by is not None:
        if not column:
            raise FERError("--by needs --column, the column to group samples by")
        groups.update(_groups(Path(by), column, set(a)))
    return {
        name: paired(np.array([a[s][1] for s in ids], bool), np.array([b[s][1] for s in ids], bool))
        for name, ids in groups.items()
    }


def _groups(path: Path, column: str, samples: set[str]) -> dict[str, list[str]]:
    if not path.is_file():
        raise FERError(f"{path}: no such file (--by takes a CSV with a sample_id column, e.g. conditions.csv)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "sample_id" not in (reader.fieldnames or []) or column not in (reader.fieldnames or []):
            raise FERError(f"{path}: needs columns sample_id and {column!r}; it has {reader.fieldnames}")
        values = {r["sample_id"]: r[column] for r in reader}
    unknown = samples - values.keys()
    if unknown:
        raise FERError(f"{path}: no row for {len(unknown)} tested sample(s), e.g. {sorted(unknown)[0]!r}")
    groups: dict[str, list[str]] = defaultdict(list)
    for s in sorted(samples):
        groups[f"{column}={values[s] or '(none)'}"].append(s)
    return dict(sorted(groups.items()))


def format_table(rows: dict[str, dict]) -> str:
    """The Markdown table of :func:`compare`'s rows: accuracies, the difference with its 95 % CI, and the
    discordant counts."""
    lines = [
        "| samples | n | accuracy A | accuracy B | A - B [95 % CI] | A right, B wrong | B right, A wrong |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lo, hi = r["difference_ci95"]
        lines.append(
            f"| {name} | {r['n']} | {r['accuracy_a']:.3f} | {r['accuracy_b']:.3f} | "
            f"{r['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {r['a_right_b_wrong']} | {r['b_right_a_wrong']} |"
        )
    return "\n".join(lines)
