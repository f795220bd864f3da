"""Test-set metrics computed from individual predictions, with bootstrap confidence intervals.

torchmetrics logs running metrics during training; this module computes the numbers that go into
``results.json`` from the stored predictions (scikit-learn), so that every number carries its n and a 95 %
percentile bootstrap interval (scipy).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from sklearn import metrics as skm
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall
from torchmetrics.functional.classification import multiclass_f1_score

from fer_lightning.errors import FERError

N_BOOTSTRAP = 1000


def bootstrap_interval(
    samples: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], n_resamples: int, seed: int
) -> np.ndarray:
    """95 % percentile intervals, ``[[lo, hi], ...]`` per value of ``statistic``, over paired resamples.

    ``statistic(*samples, axis=-1)`` takes arrays of shape ``(resamples, n)`` and returns ``(k, resamples)``.
    The draws are ``default_rng(seed).integers(0, n, (n_resamples, n))``, the same samples for every array.
    With one observation every resample is that observation, so the interval is the point (scipy would refuse).
    """
    if len(samples[0]) == 1:
        value = statistic(*(s[None, :] for s in samples), axis=-1)[:, 0]
        return np.stack([value, value], axis=-1)
    result = stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return np.stack([result.confidence_interval.low, result.confidence_interval.high], axis=-1)


def bootstrap_ci(
    labels: np.ndarray, preds: np.ndarray, num_classes: int, n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, list[float]]:
    """95 % percentile bootstrap intervals for accuracy and macro-F1 (test samples resampled with replacement)."""

    def accuracy_and_macro_f1(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
        # macro over the classes present in a resample's labels or predictions, as scikit-learn averages
        f1 = multiclass_f1_score(
            torch.from_numpy(p),
            torch.from_numpy(y),
            num_classes,
            average="macro",
            multidim_average="samplewise",
            validate_args=False,
        )
        return np.stack([(y == p).mean(axis=axis), f1.double().numpy()])

    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if len(labels) == 0:
        return {"accuracy": [float("nan")] * 2, "f1_macro": [float("nan")] * 2}
    accuracy, f1_macro = bootstrap_interval((labels, preds), accuracy_and_macro_f1, n_resamples, seed).tolist()
    return {"accuracy": accuracy, "f1_macro": f1_macro}


def classification_report(
    labels: np.ndarray,
    preds: np.ndarray,
    class_names: list[str],
    *,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """The ``test`` object of ``results.json`` (its schema: docs/schemas.md#resultsjson).

    A class never predicted (or never present) scores 0 (``zero_division=0``); macro means average over the
    classes present in the labels or the predictions, since a class absent from both says nothing about the model.
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    n, c = len(labels), len(class_names)
    if n == 0:
        raise FERError("classification_report: no samples to score; the tested split is empty")
    prf = {
        avg: skm.precision_recall_fscore_support(labels, preds, average=avg, zero_division=0)[:3]
        for avg in ("macro", "weighted")
    }
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, preds, labels=range(c), zero_division=0
    )
    ci = bootstrap_ci(labels, preds, c, n_resamples=n_resamples, seed=seed)
    return {
        "n": n,
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "accuracy_ci95": ci["accuracy"],
        "precision_macro": float(prf["macro"][0]),
        "recall_macro": float(prf["macro"][1]),
        "f1_macro": float(prf["macro"][2]),
        "f1_macro_ci95": ci["f1_macro"],
        "precision_weighted": float(prf["weighted"][0]),
        "recall_weighted": float(prf["weighted"][1]),
        "f1_weighted": float(prf["weighted"][2]),
        "confusion_matrix": skm.confusion_matrix(labels, preds, labels=range(c)).tolist(),
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


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """The metrics a LightningModule logs per stage (``train/``, ``val/``, ``test/``), from torchmetrics."""
    # validate_args would check every batch's labels with torch.unique, a host-device sync per training step
    kw = {"num_classes": num_classes, "validate_args": False}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(average="micro", **kw),
            "precision_macro": MulticlassPrecision(average="macro", **kw),
            "recall_macro": MulticlassRecall(average="macro", **kw),
            "f1_macro": MulticlassF1Score(average="macro", **kw),
            "precision_weighted": MulticlassPrecision(average="weighted", **kw),
            "recall_weighted": MulticlassRecall(average="weighted", **kw),
            "f1_weighted": MulticlassF1Score(average="weighted", **kw),
        },
        prefix=prefix,
    )
