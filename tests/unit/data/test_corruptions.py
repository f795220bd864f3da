"""Corruptions: deterministic per seed, identity at severity 0, worse with every severity step."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from omegaconf import OmegaConf

from fer_lightning.data.corruptions import KINDS, check_missing, corrupt, register_corruption, sample_seed
from fer_lightning.data.synthetic import DIFFICULTIES, Subject, render_sample
from fer_lightning.errors import FERError
from fer_lightning.runs.robustness import grid_settings
from tests.conftest import CONF


@pytest.fixture(scope="module")
def pair() -> dict[str, np.ndarray]:
    subject = Subject.sample(np.random.default_rng(0))
    visible, infrared, _ = render_sample(
        np.random.default_rng(1), subject, "Happy", 64, "iron", DIFFICULTIES["default"]
    )
    return {"visible": visible, "infrared": infrared}


def test_every_registered_kind_is_in_the_robustness_default_and_the_docs():
    kinds, *_ = grid_settings(OmegaConf.load(CONF / "robustness.yaml"))  # kinds: null, every registered one
    assert kinds == list(KINDS)
    table = (CONF.parent / "docs" / "fusion.md").read_text()
    assert all(f"`{kind}`" in table for kind in KINDS)


def test_a_registered_corruption_runs_through_corrupt_and_the_grid_settings(pair):
    @register_corruption("toy_invert")
    def invert(img, level, rng):
        return 255.0 - img * (1 - 0.2 * (level + 1))

    try:
        image = pair["visible"]
        out = corrupt(image, "toy_invert", 5, seed=0)
        assert out.dtype == np.uint8 and (out == 255).all()
        assert np.array_equal(corrupt(image, "toy_invert", 0, seed=0), image)
        kinds, *_ = grid_settings(OmegaConf.create({"kinds": None, "severities": [1], "corrupt_seed": 0}))
        assert kinds[-1] == "toy_invert"
    finally:
        del KINDS["toy_invert"]


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_and_severity_zero_is_the_identity(kind, pair):
    image = pair["infrared"]
    a, b = corrupt(image, kind, 3, seed=7), corrupt(image, kind, 3, seed=7)
    assert a.dtype == np.uint8 and a.shape == image.shape and a.tobytes() == b.tobytes()
    assert np.array_equal(corrupt(image, kind, 0, seed=7), image)
    assert not np.array_equal(a, image)  # severity 3 changes the image
    if kind not in ("blur", "contrast"):  # these two draw nothing at random
        others = [corrupt(image, kind, 3, seed=s) for s in range(8, 12)]
        assert any(not np.array_equal(a, o) for o in others)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("modality", ["visible", "infrared"])
def test_effect_grows_with_severity(kind, modality, pair):
    image = pair[modality]
    diffs = [np.abs(corrupt(image, kind, s, seed=3).astype(int) - image).mean() for s in range(6)]
    assert diffs[0] == 0
    assert all(lo < hi for lo, hi in pairwise(diffs)), diffs


def test_dead_at_severity_five_is_a_constant_image(pair):
    out = corrupt(pair["infrared"], "dead", 5, seed=0)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 1


def test_bad_kind_or_severity_is_one_line_naming_the_key(pair):
    with pytest.raises(FERError, match=r"^corrupt\.infrared=fog: unknown corruption; use one of noise, blur, .*dead$"):
        corrupt(pair["infrared"], "fog", 2, seed=0, key="corrupt.infrared")
    for bad in (6, -1, 2.5, True, "3"):
        with pytest.raises(FERError, match=r"^corrupt\.severity=.*: use an integer from 0 \(none\) to 5"):
            corrupt(pair["infrared"], "noise", bad, seed=0)
    with pytest.raises(FERError, match=r"^missing=thermal: use visible, infrared or null$"):
        check_missing("thermal")
    assert check_missing(None) is None and check_missing("infrared") == "infrared"


def test_sample_seeds_differ_per_sample_and_repeat_per_run():
    seeds = [sample_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100 and seeds == [sample_seed(0, i) for i in range(100)]
    assert sample_seed(1, 0) != sample_seed(0, 0)
