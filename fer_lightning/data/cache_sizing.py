"""The side a run's images are decoded to once (``dataset.cache_scale``), and the per-split datasets over that
decoded-once cache."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from fer_lightning.data.cache import auto_size, cache_images, source_side, stored_size
from fer_lightning.data.datasets import FERDataset
from fer_lightning.data.face_crops import FaceTable
from fer_lightning.data.transforms import PairTransform


class CacheSizing:
    """``scale``: a number >= 1 (the side is ``ceil(image_size * scale)``) or ``auto``: the source's size, capped
    (:func:`fer_lightning.data.cache.auto_size`), where the training transforms ``warp``, else the input size."""

    def __init__(self, image_size: int, scale: float | str, warps: bool):
        self.image_size, self.scale, self.warps = image_size, scale, warps

    def side(self, root: Path, rows: list[dict]) -> int:
        if self.scale != "auto":
            return stored_size(self.image_size, self.scale)
        if not self.warps:
            return self.image_size  # nothing is warped: decode straight to the input size
        # one side for both modalities: a pair's images share one geometric draw, which needs equal shapes
        paths = [r[m] for r in rows for m in ("visible", "infrared") if r.get(m)]
        return auto_size(self.image_size, source_side(root, paths))

    def restore(self, side: int) -> None:
        """The side a checkpoint's run decoded to, as a scale: :func:`stored_size` then needs no source files."""
        self.scale = side / self.image_size


def split_datasets(
    root: Path,
    rows: list[dict],
    by_split: dict[str, list[dict]],
    classes: list[str],
    side: int,
    transforms: dict[str, PairTransform],
    lock: AbstractContextManager,
    face_table: FaceTable | None = None,
) -> dict[str, FERDataset]:
    """One dataset per split over the decoded-once cache of each modality in ``transforms``' order (rows keep
    their manifest index); ``transforms``: ``train`` and ``eval``; ``face_table``: cache the face crops it holds."""
    modalities = transforms["eval"].modalities
    index = {r["sample_id"]: i for i, r in enumerate(rows)}
    label_of = {c: i for i, c in enumerate(classes)}
    cached = {}
    # under the data lock: ranks, sweep jobs and nodes sharing the data dir build each cache once, and never
    # remove the stale keys of one another's build while it is written
    with lock:
        for m in modalities:
            have = [i for i, r in enumerate(rows) if r[m]]
            position = {i: p for p, i in enumerate(have)}
            have_rows = [rows[i] for i in have]
            crops = face_table.variant(root, have_rows, m) if face_table is not None else None
            cached[m] = (cache_images(root, have_rows, m, side, crops), position)
    datasets = {}
    for s, split_rows in by_split.items():
        images = {m: c.subset([pos[index[r["sample_id"]]] for r in split_rows]) for m, (c, pos) in cached.items()}
        datasets[s] = FERDataset(
            images,
            np.array([label_of[r["label"]] for r in split_rows], dtype=np.int64),
            np.array([index[r["sample_id"]] for r in split_rows], dtype=np.int64),
            transforms["train" if s == "train" else "eval"],
        )
    return datasets
