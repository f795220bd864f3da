"""Whether a probability can be thresholded: calibration metrics, the reliability diagram's bins, and one
temperature fitted on the validation split (Guo et al. 2017, "On Calibration of Modern Neural Networks").

The ``test`` object of results.json gains ``ece`` (top-label expected calibration error over :data:`N_BINS`
equal-width confidence bins), ``ece_ci95`` (from the same paired bootstrap, seed and resamples as accuracy),
``nll`` (mean negative log-likelihood of the true class) and ``brier`` (the multiclass Brier score: the squared
distance between the probability vector and the one-hot label, summed over classes, in [0, 2]).

Temperatures scale log-probabilities (:func:`fer_lightning.runtime.rescale`): a test outcome stores softmax
probabilities, and ``log p`` is a logit up to a constant per row, which the softmax cancels.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize, special

from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_text, file_sha1
from fer_lightning.metrics import N_BOOTSTRAP, bootstrap_interval
from fer_lightning.runtime import TINY, rescale

N_BINS = 15
METHODS = ("temperature",)
# the search range of the temperature; the fit says so when it ends on a bound
T_BOUNDS = (0.05, 20.0)
SIDECAR_SUFFIX = ".calibration.json"


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The confidence (the top probability) of each prediction and whether it is right (0. or 1.)."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs.max(1), (probs.argmax(1) == np.asarray(labels)).astype(np.float64)


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The bin of each confidence: bin k holds (k/n_bins, (k+1)/n_bins], and 0 goes to the first."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, axis: int = -1
) -> np.ndarray:
    """``sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|`` along the last axis (one value per leading index),
    i.e. ``sum_b |sum_{i in b} (correct_i - confidence_i)| / n``; the same as torchmetrics' l1 calibration error."""
    confidence, correct = np.atleast_2d(confidence), np.atleast_2d(correct)
    rows, n = confidence.shape
    flat = (np.arange(rows)[:, None] * n_bins + bin_index(confidence, n_bins)).ravel()
    gap = np.bincount(flat, weights=(correct - confidence).ravel(), minlength=rows * n_bins)
    return np.abs(gap.reshape(rows, n_bins)).sum(1) / n


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict[str, list]:
    """Per bin: ``count``, mean ``confidence`` and ``accuracy`` (NaN for an empty bin), and the bin ``edges``."""
    index = bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "confidence": conf.tolist(),
        "accuracy": acc.tolist(),
    }


def calibration_report(
    labels: np.ndarray, probs: np.ndarray, *, n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, float | list[float]]:
    """``ece``, ``ece_ci95``, ``nll`` and ``brier`` of predicted ``probs`` (N, C) against class indices."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    confidence, correct = top_label(probs, labels)

    def ece(conf: np.ndarray, right: np.ndarray, axis: int = -1) -> np.ndarray:
        # bootstrap_interval's statistic: (k=1, resamples) for (resamples, n) inputs
        value = expected_calibration_error(conf, right)
        return value[None] if np.ndim(conf) > 1 else value

    ci = bootstrap_interval((confidence, correct), ece, n_resamples, seed)[0].tolist()
    one_hot = np.eye(probs.shape[1])[labels]
    p_true = probs[np.arange(len(labels)), labels]
    return {
        "ece": float(expected_calibration_error(confidence, correct)[0]),
        "ece_ci95": ci,
        "nll": float(-np.log(np.clip(p_true, TINY, None)).mean()),
        "brier": float(((probs - one_hot) ** 2).sum(1).mean()),
    }


def nll_at(log_probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(log_probs / temperature)``."""
    scaled = special.log_softmax(log_probs / temperature, axis=1)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(log(probs) / T)`` (a bounded 1-D search on log T).

    One scalar: it rescales confidence and keeps every prediction (argmax) as it was.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise FERError("calibrate=temperature: the validation split is empty; there is nothing to fit on")
    log_probs = np.log(np.clip(np.asarray(probs, dtype=np.float64), TINY, None))
    lo, hi = (math.log(b) for b in T_BOUNDS)
    result = optimize.minimize_scalar(
        lambda t: nll_at(log_probs, labels, math.exp(t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-6}
    )
    temperature = math.exp(float(result.x))
    if min(abs(result.x - lo), abs(result.x - hi)) < 1e-3:
        print(
            f"warning: calibrate=temperature: the fitted temperature {temperature:.3g} is at the end of the "
            f"searched range {T_BOUNDS}; the validation split (n={len(labels)}) may be too small or all right",
            file=sys.stderr,
            flush=True,
        )
    return temperature


@dataclass
class Calibration:
    """A temperature fitted on a checkpoint's validation predictions, and how it changed them."""

    temperature: float
    n: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray) -> Calibration:
        temperature = fit_temperature(probs, labels)
        before, after = calibration_report(labels, probs), calibration_report(labels, rescale(probs, temperature))
        return cls(
            temperature=temperature,
            n=len(labels),
            nll_before=before["nll"],
            nll_after=after["nll"],
            ece_before=before["ece"],
            ece_after=after["ece"],
        )

    def record(self) -> dict:
        """results.json's ``calibration`` (the validation side; the tested split's side is added by evaluate)."""
        return {
            "method": "temperature",
            "temperature": self.temperature,
            "fitted_on": "val",
            "val_n": self.n,
            "val_nll_before": self.nll_before,
            "val_nll_after": self.nll_after,
            "val_ece_before": self.ece_before,
            "val_ece_after": self.ece_after,
        }


def sidecar_path(ckpt: Path) -> Path:
    """Where evaluate stores the temperature of a checkpoint for predict and export: ``<stem>.calibration.json``."""
    return Path(ckpt).with_name(Path(ckpt).stem + SIDECAR_SUFFIX)


def store(ckpt: Path, record: dict) -> Path | None:
    """Writes the temperature beside the checkpoint, keyed by its sha1; a read-only run dir is a warning (predict
    and export then apply no temperature), not a failed evaluation."""
    path = sidecar_path(ckpt)
    try:
        atomic_write_text(path, json.dumps({**record, "checkpoint_sha1": file_sha1(ckpt)}, indent=2) + "\n")
    except OSError as exc:
        print(
            f"warning: cannot store the temperature in {path} ({type(exc).__name__}); predict and export will not "
            f"apply it",
            file=sys.stderr,
            flush=True,
        )
        return None
    return path


def stored_temperature(ckpt: Path, sha1: str | None = None) -> float | None:
    """The temperature evaluate stored for this checkpoint, or None; one stored for other weights (the file was
    overwritten since, e.g. a resumed run's last.ckpt) is ignored with a warning."""
    path = sidecar_path(ckpt)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        temperature = float(record["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FERError(
            f"{path}: unreadable calibration ({type(exc).__name__}); delete it, or calibrate again with "
            f"python -m fer_lightning.evaluate ckpt_path={ckpt} calibrate=temperature"
        ) from exc
    if not math.isfinite(temperature) or temperature <= 0:
        raise FERError(f"{path}: temperature={temperature} is not a positive number; delete it, or calibrate again")
    if record.get("checkpoint_sha1") != (sha1 or file_sha1(ckpt)):
        print(
            f"warning: {path} was fitted for other weights than {Path(ckpt).name} now holds; not applied "
            f"(calibrate again: python -m fer_lightning.evaluate ckpt_path={ckpt} calibrate=temperature)",
            file=sys.stderr,
            flush=True,
        )
        return None
    return temperature
