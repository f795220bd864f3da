"""Tables over ``results.json`` files: every run under a folder, grouped by dataset x modality x experiment, as
mean +- standard deviation beside the study's published accuracy (``report.md``, ``report.csv``).
``python -m fer_lightning.report`` is its command."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_text
from fer_lightning.runs import RESULTS

# The source study's test accuracy (%), Naseem et al. 2025 (docs/study.md).
STUDY_TEST_ACCURACY = {
    ("viri", "visible"): 82.22,
    ("viri", "infrared"): 41.11,
    ("viri", "fusion"): 84.44,
    ("nvie", "fusion"): 85.20,
}
# (column title, key in the results' "test" object); shown in percent.
METRICS = (("accuracy", "accuracy"), ("macro-F1", "f1_macro"), ("weighted F1", "f1_weighted"))


def find_results(root: Path, include_evaluations: bool = False) -> tuple[list[dict], list[str]]:
    """The results under ``root`` (each with ``_path``) and one note per file skipped."""
    runs, notes = [], []
    for path in sorted(root.rglob(RESULTS)):
        try:
            results = json.loads(path.read_text())
            results["test"]["accuracy"]  # a results.json without test metrics is skipped
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"skipped {path}: not a complete results.json ({type(exc).__name__})")
            continue
        if results.get("source") == "evaluate" and not include_evaluations:
            notes.append(f"skipped {path}: an evaluate result (use --include-evaluations)")
            continue
        results["_path"] = str(path)
        runs.append(results)
    return runs, notes


def near_duplicate_note(runs: list[dict]) -> str | None:
    """One line naming the runs whose test samples have near-duplicates in their training data (their accuracy is
    inflated), and those written before near-duplicates were checked (unknown); None when neither."""
    shared = [r for r in runs if r.get("near_duplicate_test_share")]
    unknown = [r for r in runs if r.get("near_duplicate_test_share") is None]
    parts = []
    if shared:
        worst = max(shared, key=lambda r: r["near_duplicate_test_share"])
        parts.append(
            f"{len(shared)} run(s) tested samples with a near-duplicate in their training data, so their metrics are "
            f"inflated (near_duplicate_test_share up to {worst['near_duplicate_test_share']:g}: {worst['_path']})"
        )
    if unknown:
        parts.append(
            f"{len(unknown)} run(s) have no near_duplicate_test_share (written before the near-duplicate check, e.g. "
            f"{unknown[0]['_path']}): evaluate their checkpoints again to know"
        )
    if not parts:
        return None
    fix = "dataset.split.near_duplicates=group keeps each cluster in one split (docs/near-duplicates.md)"
    return "; ".join([*parts, fix])


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the values present; nan where there are too few."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    mean = statistics.fmean(values) if values else math.nan
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def _experiment(run: dict) -> str:
    """The run's experiment, with its face mode where faces were on: crops and whole frames are not one group."""
    mode = ((run.get("faces") or {}).get("settings") or {}).get("mode")
    experiment = run.get("experiment") or "-"
    return f"{experiment} faces={mode}" if mode and mode != "none" else experiment


def summarise_runs(runs: list[dict]) -> list[dict]:
    """One row per (dataset, modality, experiment[, split]): metric means and standard deviations in percent."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        key = (r.get("dataset"), r.get("modality"), _experiment(r), r.get("split", "test"))
        groups[key].append(r)
    rows = []
    for (dataset, modality, experiment, split), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        row = {
            "dataset": dataset,
            "modality": modality,
            "experiment": experiment,
            "split": split,
            "runs": len(members),
            "seeds": ",".join(str(s) for s in sorted({m.get("seed") for m in members}, key=str)),
            "test_n": sum(m["test"]["n"] for m in members) / len(members),
        }
        for _, key in METRICS:
            mean, std = _mean_std([m["test"].get(key) for m in members])
            row[f"{key}_mean"], row[f"{key}_std"] = 100 * mean, 100 * std
        row["published_accuracy"] = STUDY_TEST_ACCURACY.get((str(dataset).lower(), str(modality)))
        rows.append(row)
    return rows


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def markdown(rows: list[dict]) -> str:
    """The Markdown table of :func:`summarise_runs`'s rows, in percent; a split column only where a row is not the
    test split."""
    show_split = any(r["split"] != "test" for r in rows)
    head = [
        "dataset",
        "modality",
        "experiment",
        *(["split"] if show_split else []),
        "runs",
        "test n",
        *(f"{title} (%)" for title, _ in METRICS),
        "study accuracy (%)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [
            str(r["dataset"]),
            str(r["modality"]),
            str(r["experiment"]),
            *([r["split"]] if show_split else []),
            str(r["runs"]),
            f"{r['test_n']:g}",
            *(_pm(r[f"{key}_mean"], r[f"{key}_std"]) for _, key in METRICS),
            "-" if r["published_accuracy"] is None else f"{r['published_accuracy']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    """``rows`` as CSV (the columns of the first row); NaN (a metric no run recorded) as an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
    return buf.getvalue()


def report(root: Path, include_evaluations: bool = False) -> tuple[str, list[dict]]:
    """Prints and writes ``<root>/report.md`` and ``<root>/report.csv``; returns the Markdown and the rows.

    Raises:
        FERError: ``root`` is not a folder or holds no results.
    """
    if not root.is_dir():
        raise FERError(f"{root}: no such folder; pass a run or multirun folder (e.g. logs/train/multiruns/...)")
    runs, notes = find_results(root, include_evaluations)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if not runs:
        raise FERError(
            f"{root}: no results.json found under it (train with python -m fer_lightning.train, then "
            "report its run or multirun folder)"
        )
    rows = summarise_runs(runs)
    text = markdown(rows)
    note = (
        f"\n{len(runs)} run(s) under {root}. Mean ± standard deviation over runs (seeds/folds); test n is the "
        "mean test-set size per run. Study accuracy: Naseem et al. 2025.\n"
    )
    warning = near_duplicate_note(runs)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
        note += f"\nWarning: {warning}\n"
    atomic_write_text(root / "report.md", text + note)
    atomic_write_text(root / "report.csv", to_csv(rows))
    print(text, end="")
    print(note, end="")
    return text, rows
