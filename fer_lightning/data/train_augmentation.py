"""``augment``: the training transforms, and the study's offline copies drawn from them once."""

from __future__ import annotations

from collections.abc import Sequence

from fer_lightning.data.datasets import FERDataset, offline_expand
from fer_lightning.data.transforms import PairTransform, offline_variants


class TrainAugmentation:
    """``augment``: ``{"geometric": [...], "photometric": [...], "paired_geometry": bool, "offline_copies": int}``
    of albumentations transforms. ``offline_copies`` N > 0 is the study's protocol: each training image plus N-1
    augmented copies drawn once before training (26 -> 26x the training set)."""

    def __init__(self, augment: dict, modalities: Sequence[str], image_size: int, offline_copies: int):
        self.augment = augment
        self.modalities, self.image_size, self.offline_copies = tuple(modalities), image_size, offline_copies

    @property
    def warps(self) -> bool:
        return bool(self.augment.get("geometric"))

    def train_transform(self, geometric=None) -> PairTransform:
        return PairTransform(
            self.modalities,
            self.image_size,
            geometric=(self.augment.get("geometric") or ()) if geometric is None else geometric,
            photometric=self.augment.get("photometric") or (),
            paired_geometry=self.augment.get("paired_geometry", True),
        )

    def eval_transform(self) -> PairTransform:
        return PairTransform(self.modalities, self.image_size)

    def offline_variants(self) -> list[PairTransform]:
        """One transform per geometric augmentation: the study drew its offline copies from each in turn."""
        return [self.train_transform(g) for g in offline_variants(self.augment.get("geometric") or ())]

    def expand(self, train: FERDataset, plain: PairTransform, seed: int, num_workers: int) -> FERDataset:
        """The study's offline protocol over ``train``; served through ``plain`` (resize only)."""
        return offline_expand(train, self.offline_copies, plain, self.offline_variants(), seed, num_workers)
