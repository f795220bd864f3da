"""Run-directory I/O: results.json and the summary printed at the end of a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fer_lightning.io import atomic_write_text
from fer_lightning.metrics import format_with_ci

RESULTS = "results.json"


def write_results(run_dir: Path, results: dict) -> Path:
    path = Path(run_dir) / RESULTS
    atomic_write_text(path, json.dumps(results, indent=2, allow_nan=True) + "\n")
    return path


def read_results(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def print_summary(results: dict, path: Path | None = None, console: Console | None = None) -> None:
    """Headline metrics with their 95 % intervals and n, then one row per class."""
    console = console or Console()
    test = results["test"]
    n = test["n"]
    title = f"{results['dataset']} · {results['modality']} · seed {results['seed']} · test n={n}"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value [95% CI]")
    table.add_row("accuracy", format_with_ci(test["accuracy"], test["accuracy_ci95"], n))
    table.add_row("f1_macro", format_with_ci(test["f1_macro"], test["f1_macro_ci95"], n))
    for key in ("precision_macro", "recall_macro", "precision_weighted", "recall_weighted", "f1_weighted"):
        table.add_row(key, f"{test[key]:.3f}")
    best = results.get("best_val_accuracy")
    table.add_row("best val accuracy", "-" if best is None or math.isnan(best) else f"{best:.3f}")
    table.add_row("epochs / train seconds", f"{results['epochs_trained']} / {results['train_seconds']:.1f}")
    console.print(table)
    per_class = Table(title="per class (test)")
    for col in ("class", "precision", "recall", "f1", "support"):
        per_class.add_column(col)
    for name, m in test["per_class"].items():
        per_class.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(per_class)
    if path is not None:
        console.print(f"results: {path}")
