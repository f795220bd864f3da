"""Augmentation presets, pair alignment and the study's offline x26 protocol."""

from __future__ import annotations

import numpy as np
import pytest

from fer_lightning.data.dataset_datamodules import SyntheticDataModule
from fer_lightning.data.transforms import PairTransform, offline_variants
from tests.helpers.augment_presets import preset

PRESETS = ("none", "light", "paper")
GENERATOR = {"n_subjects": 6, "samples_per_class": 2, "image_size": 40}


def face(size: int = 36, seed: int = 0) -> np.ndarray:
    # Structured, asymmetric content, so every geometric transform visibly changes it.
    y, x = np.mgrid[:size, :size]
    img = np.stack([x * 7 % 256, y * 5 % 256, (x * y) % 256], axis=-1).astype(np.uint8)
    return np.ascontiguousarray(np.roll(img, seed, axis=1))


@pytest.mark.parametrize("name", PRESETS)
def test_presets_make_valid_images_of_the_right_size(name):
    aug = preset(name)
    assert aug["offline_copies"] == 0
    tf = PairTransform(("visible", "infrared"), 32, aug["geometric"], aug["photometric"], aug["paired_geometry"])
    for seed in range(10):
        out = tf({"visible": face(), "infrared": face(seed=3)}, seed)
        for m in ("visible", "infrared"):
            assert out[m].shape == (3, 32, 32) and str(out[m].dtype) == "torch.uint8"
    # Same seed, same draw.
    a, b = (tf({"visible": face(), "infrared": face()}, 5)["visible"] for _ in range(2))
    assert (a == b).all()


@pytest.mark.parametrize("name", ["light", "paper"])
def test_paired_geometry_keeps_pairs_aligned(name):
    geometric = preset(name)["geometric"]
    paired = PairTransform(("visible", "infrared"), 32, geometric, paired_geometry=True)
    unpaired = PairTransform(("visible", "infrared"), 32, geometric, paired_geometry=False)
    img = face()
    moved = differs = 0
    for seed in range(20):
        out = paired({"visible": img, "infrared": img.copy()}, seed)
        assert (out["visible"] == out["infrared"]).all()
        plain = PairTransform(("visible",), 32)({"visible": img}, 0)["visible"]
        moved += int(not (out["visible"] == plain).all())
        sep = unpaired({"visible": img, "infrared": img.copy()}, seed)
        differs += int(not (sep["visible"] == sep["infrared"]).all())
    assert moved > 5  # the transforms did move pixels
    assert differs > 5  # and without pairing the two images would have drifted apart


def test_offline_variants_split_the_papers_one_of():
    variants = offline_variants(preset("paper")["geometric"])
    assert len(variants) == 5 and all(len(v) == 1 for v in variants)
    light = preset("light")["geometric"]
    assert offline_variants(light) == [light]


def _dm(tmp_path, copies: int, modality: str = "fusion", stage: str = "fit") -> SyntheticDataModule:
    aug = {**preset("paper"), "offline_copies": copies}
    dm = SyntheticDataModule(
        data_dir=str(tmp_path),
        modality=modality,
        image_size=32,
        batch_size=8,
        num_workers=0,
        augment=aug,
        generator=GENERATOR,
        split={"group_regex": r"^(s\d+)_"},
    )
    dm.prepare_data()
    dm.setup(stage)
    if stage == "fit":
        dm.train_dataloader()  # the offline copies are drawn when training starts
    return dm


def test_offline_x26_is_26_times_the_training_set_and_deterministic(tmp_path):
    online = _dm(tmp_path, 0)
    offline = _dm(tmp_path, 26)
    n = len(online._datasets["train"])
    assert len(offline._datasets["train"]) == 26 * n
    assert len(offline._datasets["val"]) == len(online._datasets["val"])
    train = offline._datasets["train"]
    assert np.array_equal(train.labels, np.repeat(online._datasets["train"].labels, 26))
    vis, ir = train.images["visible"], train.images["infrared"]
    assert vis.shape == (26 * n, 32, 32, 3) and vis.dtype == np.uint8
    # Copy 0 is the original, resized only; the 25 others are augmented draws, aligned across the pair.
    plain = PairTransform(("visible", "infrared"), 32)
    orig = plain({m: online._datasets["train"].images[m][0] for m in ("visible", "infrared")}, 0)
    assert np.array_equal(vis[0], orig["visible"].permute(1, 2, 0).numpy())
    assert sum(not np.array_equal(vis[k], vis[0]) for k in range(1, 26)) >= 20
    # The same seed draws the same copies in a fresh datamodule.
    again = _dm(tmp_path, 26)._datasets["train"]
    assert np.array_equal(again.images["visible"], vis) and np.array_equal(again.images["infrared"], ir)
    batch = next(iter(offline.train_dataloader()))
    assert batch["visible"].shape == (8, 3, 32, 32)


def test_offline_copies_are_not_drawn_for_evaluation(tmp_path):
    dm = _dm(tmp_path, 26, "visible", stage="test")
    n = len(dm._datasets["train"])
    dm.test_dataloader()
    assert len(dm._datasets["train"]) == n
    dm.train_dataloader()
    assert len(dm._datasets["train"]) == 26 * n


def test_offline_copies_must_not_be_negative(tmp_path):
    from fer_lightning.errors import FERError

    with pytest.raises(FERError, match="offline_copies"):
        SyntheticDataModule(data_dir=str(tmp_path), augment={"offline_copies": -1})


def test_paper_perspective_is_torchvisions():
    """The preset's perspective leaves as much of the frame empty as torchvision's RandomPerspective(0.5), the
    study's (albumentations.Perspective, the old preset's, never leaves any)."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    white = np.full((64, 64, 3), 255, np.uint8)
    (perspective,) = offline_variants(preset("paper")["geometric"])[2]
    ours = PairTransform(("visible",), 64, [perspective])
    covered = [float((ours({"visible": white}, s)["visible"] > 0).float().mean()) for s in range(200)]
    torch.manual_seed(0)
    study = v2.RandomPerspective(distortion_scale=0.5, p=1.0)
    reference = [(np.asarray(study(Image.fromarray(white))) > 0).mean() for _ in range(200)]
    assert abs(np.mean(covered) - np.mean(reference)) < 0.03 and np.mean(covered) < 0.7
