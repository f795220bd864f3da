"""Test-set metrics computed from individual predictions, with bootstrap confidence intervals.

torchmetrics logs running metrics during training; this module computes the numbers that go into
``results.json`` from the stored predictions, so that every number carries its n and a 95 % interval.
"""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 1000


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class from one or a stack of confusion matrices.

    A class never predicted (or never present) scores 0, as scikit-learn's ``zero_division=0`` does.
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    predicted = cm.sum(axis=-2).astype(float)
    support = cm.sum(axis=-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def _macro(values: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """Mean over the classes that occur in the labels or the predictions, as scikit-learn averages.

    A class absent from both (possible in a small fold or resample) says nothing about the model.
    """
    present = (cm.sum(axis=-1) + cm.sum(axis=-2)) > 0
    return (values * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def _macro_f1(cm: np.ndarray) -> np.ndarray:
    return _macro(_per_class(cm)[2], cm)


def bootstrap_ci(
    labels: np.ndarray, preds: np.ndarray, num_classes: int, n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, list[float]]:
    """95 % percentile bootstrap intervals for accuracy and macro-F1 (test samples resampled with replacement)."""
    n = len(labels)
    if n == 0:
        return {"accuracy": [float("nan")] * 2, "f1_macro": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    correct = (labels == preds)[idx]
    cms = np.zeros((n_resamples, num_classes, num_classes), dtype=np.int64)
    rows = np.repeat(np.arange(n_resamples), n)
    np.add.at(cms, (rows, labels[idx].ravel(), preds[idx].ravel()), 1)
    return {"accuracy": percentile_interval(correct.mean(axis=1)), "f1_macro": percentile_interval(_macro_f1(cms))}


def percentile_interval(values: np.ndarray) -> list[float]:
    """The 95 % percentile interval of bootstrap replicates."""
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def classification_report(
    labels: np.ndarray,
    preds: np.ndarray,
    class_names: list[str],
    *,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """The ``test`` object of ``results.json`` (see CONTRACTS.md)."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    c = len(class_names)
    cm = confusion_matrix(labels, preds, c)
    precision, recall, f1, support = _per_class(cm)
    n = len(labels)
    weights = support / support.sum() if n else np.zeros(c)
    ci = bootstrap_ci(labels, preds, c, n_resamples=n_resamples, seed=seed)
    return {
        "n": n,
        "accuracy": float((labels == preds).mean()) if n else float("nan"),
        "accuracy_ci95": ci["accuracy"],
        "precision_macro": float(_macro(precision, cm)),
        "recall_macro": float(_macro(recall, cm)),
        "f1_macro": float(_macro(f1, cm)),
        "f1_macro_ci95": ci["f1_macro"],
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "confusion_matrix": cm.tolist(),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "bootstrap": {"resamples": n_resamples, "seed": seed, "method": "percentile"},
    }


def format_with_ci(value: float, ci: list[float], n: int) -> str:
    """``0.822 [0.73, 0.90] (n=90)``."""
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] (n={n})"
