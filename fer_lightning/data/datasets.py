"""Torch datasets over decoded image arrays, and a sampler that makes every draw reproducible."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fer_lightning.data.transforms import PairTransform


class FERDataset(Dataset):
    """Samples ``{"visible"?, "infrared"?, "label", "index"}`` with uint8 CHW images.

    Args:
        images: modality -> (N, H, W, 3) uint8 array.
        labels: (N,) class indices.
        indices: (N,) row numbers in the manifest, so predictions can be traced back to files.
        transform: applied to each sample with a per-draw seed.

    Items are ``(i, seed)`` from :class:`SeededSampler`; a plain ``i`` uses seed ``i``.
    """

    def __init__(self, images: dict[str, np.ndarray], labels: np.ndarray, indices: np.ndarray, transform: PairTransform):
        self.images = images
        self.labels = labels
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        i, seed = item if isinstance(item, tuple) else (item, item)
        sample: dict = self.transform({m: a[i] for m, a in self.images.items()}, seed)
        sample["label"] = int(self.labels[i])
        sample["index"] = int(self.indices[i])
        return sample


class SeededSampler(Sampler):
    """Yields ``(index, augmentation seed)``; order and seeds depend only on (seed, epoch).

    Lightning calls ``set_epoch`` before each epoch, so a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**31, size=self.n)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))
