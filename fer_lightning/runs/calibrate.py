"""``calibrate=temperature`` for evaluate and the robustness grid: one temperature fitted on the checkpoint's
clean validation predictions (never on the split being tested), then applied to every tested outcome."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from fer_lightning.calibration import METHODS, Calibration, calibration_report
from fer_lightning.errors import FERError
from fer_lightning.runs.results import TestOutcome
from fer_lightning.runtime import rescale

if TYPE_CHECKING:  # the engine calls this module
    from fer_lightning.runs.engine import Run


def calibrate_method(cfg: DictConfig) -> str | None:
    """``calibrate=``'s value, checked: None (the model's own probabilities) or a method of :data:`METHODS`."""
    value = cfg.get("calibrate")
    if value in (None, False, "none", "null"):
        return None
    if value not in METHODS:
        raise FERError(f"calibrate={value}: use {' or '.join(METHODS)} (or null for the model's own probabilities)")
    if str(cfg.get("split", "test")) == "val":
        raise FERError(
            "calibrate=temperature split=val: the temperature is fitted on the validation split, so scoring it there "
            "says nothing; test it on split=test"
        )
    return str(value)


def fit_outcome(outcome: TestOutcome) -> Calibration:
    """The fit itself, on one outcome's probabilities and labels (the validation split's, see :func:`fit_on_val`)."""
    return Calibration.fit(outcome.probs, outcome.labels)


def fit_on_val(run: Run) -> Calibration:
    """A temperature from ``run``'s model on its clean validation split: no corruption, no missing camera, since a
    deployed model carries one temperature whatever its cameras do."""
    return fit_outcome(run.test("val"))


def scaled(outcome: TestOutcome, temperature: float) -> TestOutcome:
    """``outcome`` with its probabilities rescaled by ``temperature`` (the labels and predictions unchanged)."""
    return dataclasses.replace(outcome, probs=rescale(outcome.probs, temperature).astype(np.float32))


def tested_split_record(raw: TestOutcome, calibrated: TestOutcome) -> dict:
    """The tested split's calibration before and after the temperature (results.json ``calibration``)."""
    before = calibration_report(raw.labels, raw.probs)
    after = calibration_report(calibrated.labels, calibrated.probs)
    return {
        "ece_before": before["ece"],
        "ece_before_ci95": before["ece_ci95"],
        "ece_after": after["ece"],
        "ece_after_ci95": after["ece_ci95"],
        "nll_before": before["nll"],
        "nll_after": after["nll"],
        "brier_before": before["brier"],
        "brier_after": after["brier"],
    }
