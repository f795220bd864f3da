"""What a tested run writes: results.json, predictions.csv and the confusion-matrix figure, from one place.

``train`` and ``evaluate`` both end in :func:`write_test_records`, so their results.json carry the same keys and
their predictions.csv the same schema: ``sample_id, label, pred, p_<class>...`` (``label`` is the true class,
empty where unknown; ``pred`` the predicted one), then per-sample extras such as fusion weights.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fer_lightning.calibration import calibration_report, reliability_bins, top_label
from fer_lightning.io import atomic_write_text
from fer_lightning.metrics import classification_report, format_with_ci
from fer_lightning.modalities import CAMERAS
from fer_lightning.models.fusion import modality_weight_summary
from fer_lightning.plots import confusion_matrix_figure, reliability_figure

RESULTS = "results.json"
PREDICTIONS = "predictions.csv"
RELIABILITY = "reliability.png"
PROB_PREFIX = "p_"
# per-sample columns of conditions.csv (synthetic data) that modality weights are summarised by
CONDITION_COLUMNS = ("visible_condition", "infrared_condition")
HEADER_KEYS = {"dataset", "modality", "seed", "classes", "manifest_sha1"}
# results.json keys besides the run's header and ``test``, with their value where a path does not set them:
# train and evaluate write the same keys.
REPORT_FIELDS = {
    "best_val_accuracy": None,
    # the checkpoint file tested (train: the best-validation one, or last.ckpt with test_checkpoint=last)
    "checkpoint": None,
    # deprecated: the same path as "checkpoint", kept for one release for readers of the old name
    "best_checkpoint": None,
    # which checkpoint train tested: "best" (best validation accuracy) or "last"; None from evaluate
    "test_checkpoint": None,
    "epochs_trained": None,
    "train_seconds": float("nan"),
    "split": "test",
    "source": None,
    "experiment": None,
    "evaluated_run_dir": None,
    "overrides": [],
    "manifest_changed": False,
    "allow_manifest_change": False,
    # the split tested: "prepared" (the manifest as prepared), or "recomputed" (evaluate: the checkpoint's own
    # split settings differ from split.json's, so its split was drawn in memory and the prepared files left as is)
    "split_source": "prepared",
    "corruption": None,
    # the face step's record (settings, transform, counts per status; data/face_crops.py); None: whole frames
    "faces": None,
    "budget": None,
    # evaluate calibrate=temperature: the temperature the written probabilities are scaled by (fitted on the
    # validation split), and ``calibration``: the fit and the tested split's ECE before and after it
    "temperature": None,
    "calibration": None,
    # the share of the tested samples with a near-duplicate in the data the model trained on (train, and val for
    # a test split); None from runs written before near-duplicates were checked
    "near_duplicate_test_share": None,
}


@dataclass
class TestOutcome:
    """The individual test predictions of one model on one split.

    ``extras`` holds further per-sample columns (e.g. ``w_visible`` / ``w_infrared`` fusion weights).
    """

    classes: list[str]
    sample_ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)

    @classmethod
    def from_module(cls, outputs: dict[str, torch.Tensor], rows: Sequence[dict], classes: list[str]) -> TestOutcome:
        """From a LightningModule's ``test_outputs`` (probs, labels, index into ``rows``, optional extras)."""
        index = outputs["index"].tolist()
        extras = {}
        for key, value in outputs.items():
            if key in ("probs", "labels", "index"):
                continue
            value = value.float().numpy()
            if key == "weights":  # (N, 2): the fusion's per-sample modality weights
                extras.update(w_visible=value[:, 0], w_infrared=value[:, 1])
            else:
                extras[key] = value
        for m in ("visible", "infrared"):  # the image files, relative to the manifest
            if any(rows[i].get(m) for i in index):
                extras[m] = np.array([rows[i].get(m) or "" for i in index], dtype=object)
        return cls(
            classes=list(classes),
            sample_ids=[rows[i]["sample_id"] for i in index],
            labels=outputs["labels"].numpy(),
            probs=outputs["probs"].float().numpy(),
            extras=extras,
        )


def write_results(run_dir: Path, results: dict) -> Path:
    """Writes ``results`` as ``run_dir/results.json`` atomically (NaN kept as NaN); returns its path."""
    path = Path(run_dir) / RESULTS
    atomic_write_text(path, json.dumps(results, indent=2, allow_nan=True) + "\n")
    return path


def read_results(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def previous_results(run_dir: Path) -> dict:
    """``run_dir``'s results.json, or ``{}`` where it has none or an unreadable one."""
    path = run_dir / RESULTS
    try:
        return read_results(path) if path.is_file() else {}
    except ValueError:
        return {}


def predictions_text(
    sample_ids: Sequence[str],
    labels: Sequence[str | None],
    probs: np.ndarray,
    classes: Sequence[str],
    extras: dict[str, Sequence] | None = None,
) -> str:
    """predictions.csv: ``sample_id, label, pred, p_<class>..., <extras>...``; ``label`` empty where unknown."""
    extras = extras or {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["sample_id", "label", "pred", *(f"{PROB_PREFIX}{c}" for c in classes), *extras])
    for i, (sid, label, p) in enumerate(zip(sample_ids, labels, probs, strict=True)):
        writer.writerow(
            [
                sid,
                "" if label is None else label,
                classes[int(np.argmax(p))],
                *(f"{v:.6f}" for v in p),
                *(_cell(col[i]) for col in extras.values()),
            ]
        )
    return buf.getvalue()


def _cell(value) -> str:
    return f"{value:.6f}" if isinstance(value, float | np.floating) else str(value)


def write_test_records(
    run_dir: Path, outcome: TestOutcome, header: dict, *, title: str, conditions: dict[str, dict] | None = None
) -> tuple[dict, Path]:
    """Writes results.json (``header`` + the ``test`` object), predictions.csv, confusion_matrix.png and
    reliability.png."""
    run_dir = Path(run_dir)
    unknown = set(header) - set(REPORT_FIELDS) - HEADER_KEYS
    if unknown:
        raise ValueError(f"results.json keys {sorted(unknown)} are not in REPORT_FIELDS")
    header = {**REPORT_FIELDS, **header}
    report = classification_report(outcome.labels, outcome.preds, outcome.classes)
    report.update(calibration_report(outcome.labels, outcome.probs))
    weights = _weight_summary(outcome, conditions)
    if weights:
        report["modality_weights"] = weights
    results = {**header, "test": report, "test_samples": list(outcome.sample_ids), "run_dir": str(run_dir.resolve())}
    path = write_results(run_dir, results)
    names = [outcome.classes[int(y)] for y in outcome.labels]
    atomic_write_text(
        run_dir / PREDICTIONS,
        predictions_text(outcome.sample_ids, names, outcome.probs, outcome.classes, outcome.extras),
    )
    confusion_matrix_figure(
        report["confusion_matrix"],
        outcome.classes,
        run_dir / "confusion_matrix.png",
        title=f"{title} (n={report['n']})",
    )
    reliability_figure(
        reliability_bins(*top_label(outcome.probs, outcome.labels)),
        run_dir / RELIABILITY,
        title=f"{title}: ECE {report['ece']:.3f} (n={report['n']})",
    )
    return results, path


def _weight_summary(outcome: TestOutcome, conditions: dict[str, dict] | None) -> dict:
    """Mean per-sample modality weights per true class and, where the data records them (the synthetic set's
    conditions.csv), per condition: which camera the model trusted."""
    if "w_visible" not in outcome.extras:
        return {}
    weights = np.stack([outcome.extras["w_visible"], outcome.extras["w_infrared"]], axis=1)
    summary = {"per_class": modality_weight_summary(weights, outcome.labels, outcome.classes)}
    for column in CONDITION_COLUMNS:
        if conditions and any(column in c for c in conditions.values()):
            values = [conditions.get(sid, {}).get(column) or "none" for sid in outcome.sample_ids]
            summary[column] = modality_weight_summary(weights, values)
    return summary


def condition(corruption: dict | None) -> str:
    """What a heading adds for a test on corrupted or missing images (results.json's ``corruption``):
    ``" (infrared: noise, severity 3)"``, ``" (infrared missing)"``, or nothing for clean data."""
    if not corruption:
        return ""
    if corruption.get("missing"):
        return f" ({corruption['missing']} missing)"
    kinds = ", ".join(f"{m}: {corruption[m]}" for m in CAMERAS if corruption.get(m))
    return f" ({kinds}, severity {corruption.get('severity')})"


def print_results(results: dict, path: Path | None = None, console: Console | None = None) -> None:
    """Headline metrics with their 95 % intervals and n, then one row per class."""
    console = console or Console()
    test = results["test"]
    n = test["n"]
    split = results.get("split") or "test"
    title = (
        f"{results['dataset']} · {results['modality']} · seed {results['seed']} · {split} n={n}"
        f"{condition(results.get('corruption'))}"
    )
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value [95% CI]")
    table.add_row("accuracy", format_with_ci(test["accuracy"], test["accuracy_ci95"], n))
    table.add_row("f1_macro", format_with_ci(test["f1_macro"], test["f1_macro_ci95"], n))
    if "ece" in test:  # results.json written before calibration metrics existed have none
        table.add_row("ECE (15 bins)", format_with_ci(test["ece"], test["ece_ci95"], n))
        table.add_row("NLL / Brier", f"{test['nll']:.3f} / {test['brier']:.3f}")
    if results.get("temperature") is not None:
        table.add_row("temperature (fitted on val)", f"{results['temperature']:.3f}")
    for key in ("precision_macro", "recall_macro", "precision_weighted", "recall_weighted", "f1_weighted"):
        table.add_row(key, f"{test[key]:.3f}")
    best = results.get("best_val_accuracy")
    table.add_row("best val accuracy", "-" if best is None or math.isnan(best) else f"{best:.3f}")
    seconds = results.get("train_seconds")
    seconds = "-" if seconds is None or math.isnan(seconds) else f"{seconds:.1f}"
    table.add_row("epochs / train seconds", f"{results['epochs_trained']} / {seconds}")
    console.print(table)
    per_class = Table(title=f"per class ({split})")
    for col in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(col)
    for name, m in test["per_class"].items():
        per_class.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(per_class)
    warning = near_duplicate_warning(results)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if path is not None:
        console.print(f"results: {path}")


def near_duplicate_warning(results: dict) -> str | None:
    """One line when the tested samples have near-duplicates in the run's training data, else None."""
    share = results.get("near_duplicate_test_share")
    if not share:
        return None
    split = results.get("split", "test")
    n = results["test"]["n"]
    trained_on = "train split" if split == "val" else "train and val splits"
    return (
        f"{round(share * n)} of the {n} {split} samples ({100 * share:.1f} %) have a near-duplicate in the "
        f"{trained_on} the model learned from (near_duplicate_test_share={share:g}), so the {split} metrics "
        "overstate it; a split drawn with dataset.split.near_duplicates=group keeps each cluster in one split "
        "(docs/near-duplicates.md)"
    )
