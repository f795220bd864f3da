"""Torch datasets over decoded image arrays, a sampler that makes every draw reproducible, and the worker count."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fer_lightning.data.transforms import PairTransform
from fer_lightning.validation import Number


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
    ``passes`` > 1 makes one epoch that many shuffled passes over the data (each sample once per pass, each draw
    with its own augmentation seed): on a small dataset an epoch of a few steps would otherwise spend much of its
    time restarting the loader. One pass draws exactly what this sampler always drew.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, passes: int = 1):
        self.n, self.seed, self.shuffle, self.epoch, self.passes = n, seed, shuffle, 0, max(1, int(passes))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n * self.passes

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = np.concatenate([rng.permutation(self.n) for _ in range(self.passes)])
        else:
            order = np.tile(np.arange(self.n), self.passes)
        seeds = rng.integers(0, 2**31, size=len(order))
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class ResumableLoader(DataLoader):
    """The training loader, resumable mid-epoch: a checkpoint written inside an epoch (a preempted job's) records
    how many of the epoch's batches were trained, and the resumed run skips exactly those, so it trains on what
    an uninterrupted run would. Lightning saves and restores this state with its loops (``state_dict`` /
    ``load_state_dict``); ``progress`` reads the trainer's ``(epoch, batches trained in it)``.
    """

    def __init__(self, *args, progress: Callable[[], tuple[int, int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self._skip = 0

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.progress() if self.progress is not None else (0, 0)
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        finished = batches >= len(self)
        self._skip = 0 if finished else batches
        # Lightning sets the epoch only after this loader's iterator exists, and workers draw their first indices
        # when it is created: the resumed epoch must be set here.
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch + 1 if finished else epoch)

    def __iter__(self):
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        for _ in range(skip):  # decoded and dropped: only the first epoch after a mid-epoch resume pays for it
            next(iterator)
        return iterator


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


WORKERS = Number(int, 0, null=True, words=("auto",), lenient=True)


def resolve_workers(value: int | str | None) -> int:
    """``auto``: none on a small CPU-only box (workers would steal the model's cores), most cores with a GPU."""
    value = WORKERS.check("dataset.num_workers", value)
    if value is None or value == "auto":
        cores = available_cores()
        if torch.cuda.is_available():
            return max(1, min(cores - 1, 12))
        return 0 if cores <= 2 else min(4, cores // 4)
    return value
