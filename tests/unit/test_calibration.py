"""Calibration: ECE against a hand-computed case and torchmetrics, and the temperature fit. evaluate
calibrate=temperature on a trained run is in tests/integration/test_calibration_runs.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from fer_lightning.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    top_label,
)
from fer_lightning.metrics import bootstrap_ci, bootstrap_interval
from fer_lightning.runtime import rescale, softmax


def test_ece_of_a_hand_computed_case():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # confidences 0.9, 0.9 (bin 13 of 15: one right), 0.62 (bin 9, right), 0.7 (bin 10, right):
    # |1/2 - 0.9| * 2/4 + |1 - 0.62| * 1/4 + |1 - 0.7| * 1/4 = 0.2 + 0.095 + 0.075
    conf, right = top_label(probs, labels)
    assert expected_calibration_error(conf, right)[0] == pytest.approx(0.37)
    bins = reliability_bins(conf, right)
    assert bins["count"][13] == 2 and bins["count"][9] == 1 and bins["count"][10] == 1 and sum(bins["count"]) == 4
    assert bins["accuracy"][13] == 0.5 and bins["confidence"][13] == pytest.approx(0.9)


def test_ece_equals_torchmetrics_and_its_interval_uses_the_accuracy_bootstrap():
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(300, 5)) * 2)
    labels = rng.integers(0, 5, 300)
    report = calibration_report(labels, probs)
    reference = MulticlassCalibrationError(num_classes=5, n_bins=15, norm="l1")
    assert report["ece"] == pytest.approx(float(reference(torch.from_numpy(probs), torch.from_numpy(labels))), abs=1e-6)
    lo, hi = report["ece_ci95"]
    assert lo < report["ece"] < hi
    # the same draws as accuracy's interval: the correct-flag's resampled means give accuracy's CI exactly
    conf, right = top_label(probs, labels)
    acc = bootstrap_interval((conf, right), lambda c, r, axis=-1: r.mean(axis)[None], 1000, 0)[0].tolist()
    assert acc == pytest.approx(bootstrap_ci(labels, probs.argmax(1), 5)["accuracy"])
    one_hot = np.eye(5)[labels]
    assert report["brier"] == pytest.approx(((probs - one_hot) ** 2).sum(1).mean())
    assert report["nll"] == pytest.approx(
        float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs)), torch.from_numpy(labels)))
    )


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_fit_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20000, 5)) * 3
    # labels drawn from softmax(logits / T): the model's probabilities softmax(logits) are off by exactly T
    p_true = softmax(logits, true_t)
    labels = (p_true.cumsum(1) > rng.random((len(logits), 1))).argmax(1)
    fitted = fit_temperature(softmax(logits), labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    before = calibration_report(labels, softmax(logits))["ece"]
    after = calibration_report(labels, rescale(softmax(logits), fitted))["ece"]
    assert after < before / 3
    assert (rescale(softmax(logits), fitted).argmax(1) == logits.argmax(1)).all()  # predictions unchanged


def test_rescale_of_probabilities_equals_scaling_the_logits():
    logits = np.random.default_rng(2).normal(size=(50, 7)) * 10
    assert np.allclose(rescale(softmax(logits), 1.7), softmax(logits, 1.7), atol=1e-12)
