"""Torch datasets over decoded image arrays, a sampler that makes every draw reproducible, and the worker count."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fer_lightning.data.transforms import PairTransform
from fer_lightning.errors import FERError


class FERDataset(Dataset):
    """Samples ``{"visible"?, "infrared"?, "label", "index"}`` with uint8 CHW images.

    Args:
        images: modality -> (N, H, W, 3) uint8 array.
        labels: (N,) class indices.
        indices: (N,) row numbers in the manifest, so predictions can be traced back to files.
        transform: applied to each sample with a per-draw seed.

    Items are ``(i, seed)`` from :class:`SeededSampler`; a plain ``i`` uses seed ``i``.
    """

    def __init__(
        self, images: dict[str, np.ndarray], labels: np.ndarray, indices: np.ndarray, transform: PairTransform
    ):
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


class _OfflineDraws(Dataset):
    """Item ``j`` is copy ``j % copies`` of sample ``j // copies``: copy 0 unchanged, copy k the variant
    ``(k - 1) % len(variants)`` with a seed fixed by (seed, sample, copy)."""

    def __init__(self, base: FERDataset, copies: int, plain: PairTransform, variants: list[PairTransform], seed: int):
        self.base, self.copies, self.plain, self.variants, self.seed = base, copies, plain, variants, seed

    def __len__(self) -> int:
        return len(self.base) * self.copies

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        i, k = divmod(j, self.copies)
        images = {m: a[i] for m, a in self.base.images.items()}
        if k == 0:
            return self.plain(images, 0)
        draw_seed = int(np.random.SeedSequence([self.seed, 26, i, k]).generate_state(1)[0])
        return self.variants[(k - 1) % len(self.variants)](images, draw_seed)


def offline_expand(
    base: FERDataset,
    copies: int,
    plain: PairTransform,
    variants: list[PairTransform],
    seed: int,
    num_workers: int = 0,
) -> FERDataset:
    """The study's offline augmentation: every image of ``base`` kept plus ``copies - 1`` copies drawn once.

    The result holds ``len(base) * copies`` final-size images in memory and serves them through ``plain`` (a
    resize-only transform), so epochs re-read the same draws, as training on the study's files did. The draws
    depend only on ``seed``, not on ``num_workers``.
    """
    draws = _OfflineDraws(base, copies, plain, variants, seed)
    out: dict[str, np.ndarray] = {}
    start = 0
    for batch in DataLoader(draws, batch_size=256, num_workers=num_workers):
        for m, t in batch.items():
            if m not in out:
                out[m] = np.empty((len(draws), *t.shape[2:], t.shape[1]), dtype=np.uint8)
            out[m][start : start + len(t)] = t.permute(0, 2, 3, 1).numpy()
        start += len(next(iter(batch.values())))
    return FERDataset(out, np.repeat(base.labels, copies), np.repeat(base.indices, copies), plain)


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


def resolve_workers(value: int | str | None) -> int:
    """``auto``: none on a small CPU-only box (workers would steal the model's cores), most cores with a GPU."""
    if value is None or value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if torch.cuda.is_available():
            return max(1, min(cores - 1, 12))
        return 0 if cores <= 2 else min(4, cores // 4)
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise FERError(f"dataset.num_workers={value!r}: use auto or an integer >= 0")
    return n
