import numpy as np
import pytest
from sklearn import metrics as skm

from fer_lightning.metrics import bootstrap_ci, classification_report, format_with_ci

CLASSES = ["a", "b", "c", "d"]


def test_metrics_match_scikit_learn_including_a_never_predicted_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 3, 200))
    preds[preds == 3] = 0  # class "d" is never predicted
    r = classification_report(labels, preds, CLASSES)
    assert r["n"] == 200
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    for avg in ("macro", "weighted"):
        p, rec, f1, _ = skm.precision_recall_fscore_support(labels, preds, average=avg, zero_division=0)
        assert r[f"precision_{avg}"] == pytest.approx(p)
        assert r[f"recall_{avg}"] == pytest.approx(rec)
        assert r[f"f1_{avg}"] == pytest.approx(f1)
    assert r["confusion_matrix"] == skm.confusion_matrix(labels, preds, labels=range(4)).tolist()
    p, rec, f1, sup = skm.precision_recall_fscore_support(labels, preds, labels=range(4), zero_division=0)
    for i, name in enumerate(CLASSES):
        assert r["per_class"][name]["precision"] == pytest.approx(p[i])
        assert r["per_class"][name]["f1"] == pytest.approx(f1[i])
        assert r["per_class"][name]["support"] == sup[i]
    assert r["per_class"]["d"]["precision"] == 0.0


def test_macro_average_skips_a_class_absent_from_labels_and_predictions():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    r = classification_report(labels, preds, CLASSES)  # "d" never occurs
    assert r["f1_macro"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert r["precision_macro"] == pytest.approx(skm.precision_score(labels, preds, average="macro"))
    assert r["per_class"]["d"]["support"] == 0


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 500, 5000):
        labels = rng.integers(0, 3, n)
        preds = np.where(rng.random(n) < 0.8, labels, (labels + 1) % 3)
        r = classification_report(labels, preds, ["x", "y", "z"])
        lo, hi = r["accuracy_ci95"]
        assert lo <= r["accuracy"] <= hi
        flo, fhi = r["f1_macro_ci95"]
        assert flo <= r["f1_macro"] <= fhi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_is_seeded_and_uses_1000_resamples():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    preds = np.array([0, 1, 1, 0, 2, 2, 0, 1])
    assert bootstrap_ci(labels, preds, 3, seed=3) == bootstrap_ci(labels, preds, 3, seed=3)
    assert classification_report(labels, preds, ["a", "b", "c"])["bootstrap"]["resamples"] >= 1000


def test_format_with_ci():
    assert format_with_ci(0.8222, [0.7333, 0.9], 90) == "0.822 [0.73, 0.90] (n=90)"


def _reference_bootstrap(labels, preds, num_classes, n_resamples=1000, seed=0):
    """The numpy bootstrap metrics.py carried before it used scipy, kept to show the intervals did not move."""
    n = len(labels)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    cms = np.zeros((n_resamples, num_classes, num_classes), dtype=np.int64)
    np.add.at(cms, (np.repeat(np.arange(n_resamples), n), labels[idx].ravel(), preds[idx].ravel()), 1)
    tp = np.diagonal(cms, axis1=-2, axis2=-1).astype(float)
    predicted, support = cms.sum(axis=-2).astype(float), cms.sum(axis=-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(predicted > 0, tp / predicted, 0.0)
        r = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    present = (support + predicted) > 0
    macro_f1 = (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)
    accuracy = (labels == preds)[idx].mean(axis=1)
    return {k: np.percentile(v, [2.5, 97.5]).tolist() for k, v in (("accuracy", accuracy), ("f1_macro", macro_f1))}


@pytest.mark.parametrize(("n", "seed"), [(8, 3), (90, 0), (225, 1)])
def test_scipy_bootstrap_gives_the_intervals_of_the_previous_implementation(n, seed):
    rng = np.random.default_rng(n)
    labels = rng.integers(0, 5, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 4, n))  # class 4 is under-predicted
    new, old = bootstrap_ci(labels, preds, 5, seed=seed), _reference_bootstrap(labels, preds, 5, seed=seed)
    for key in ("accuracy", "f1_macro"):
        assert new[key] == pytest.approx(old[key], abs=1e-6), key


def test_degenerate_test_sets_give_point_intervals_not_errors():
    one = classification_report(np.array([2]), np.array([2]), ["a", "b", "c"])
    assert one["accuracy"] == 1.0 and one["accuracy_ci95"] == [1.0, 1.0] and one["f1_macro_ci95"] == [1.0, 1.0]
    wrong = bootstrap_ci(np.array([0]), np.array([1]), 3)
    assert wrong == {"accuracy": [0.0, 0.0], "f1_macro": [0.0, 0.0]}
    labels = np.array([0, 1, 2, 0, 1])
    perfect = classification_report(labels, labels, ["a", "b", "c"])
    assert perfect["accuracy_ci95"] == [1.0, 1.0] and perfect["f1_macro_ci95"] == [1.0, 1.0]
    assert np.isnan(bootstrap_ci(np.array([], int), np.array([], int), 3)["accuracy"]).all()
