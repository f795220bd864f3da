"""The LightningDataModule every dataset's shares (the per-dataset ones are in ``datamodules.py``); the modality
is a constructor argument.

All of them read the same prepared layout (``<data_dir>/<name>/manifest.csv``); they differ only in how
``build_dataset()`` produces it (called by Lightning's ``prepare_data``, under a lock). Images leave the workers
as uint8 and are converted and normalised on the device (``on_after_batch_transfer``), which moves a quarter of
the bytes and keeps workers cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from fer_lightning.data import face_crops, near_duplicates
from fer_lightning.data.build import STATE
from fer_lightning.data.cache import auto_size, cache_images, source_side, stored_size
from fer_lightning.data.datasets import (
    FERDataset,
    ResumableLoader,
    SeededSampler,
    offline_expand,
    resolve_workers,
)
from fer_lightning.data.manifest import (
    MANIFEST,
    SPLITS,
    SplitSpec,
    apply_fold,
    ensure_splits,
    manifest_sha1,
    read_splits,
)
from fer_lightning.data.normalize import NORMALIZATIONS, Normalizer, Stats, modality_stats
from fer_lightning.data.summary import unpaired_message
from fer_lightning.data.transforms import PairTransform, offline_variants
from fer_lightning.errors import FERError
from fer_lightning.faces import FaceSettings
from fer_lightning.io import remove_stale_temporaries
from fer_lightning.modalities import cameras

log = logging.getLogger(__name__)


def number(key: str, value, minimum: float, kind: type = int, fix: str = ""):
    """``value`` as ``kind`` when it is one (or its digits) and >= ``minimum``; else one line naming the key."""
    try:
        number = kind(value) if not isinstance(value, bool) else None
        ok = number is not None and number >= minimum and (kind is float or float(value) == number)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        want = f"an integer >= {minimum}" if kind is int else f"a number >= {minimum}"
        raise FERError(f"{key}={value!r}: use {want}{fix}")
    return number


class ManifestDataModule(L.LightningDataModule):
    """Serves visible, infrared or fused batches from a prepared manifest.

    Args:
        modality: ``visible``, ``infrared`` or ``fusion``.
        data_dir: holds ``raw/<name>/`` (archives) and ``<name>/`` (the prepared dataset).
        classes: class names in label order; None takes the sorted labels found in the manifest.
        image_size: side of the square image fed to the network.
        batch_size / eval_batch_size: training and validation/test batch sizes.
        num_workers: DataLoader workers, or ``auto`` (see :func:`resolve_workers`).
        augment: ``{"geometric": [...], "photometric": [...], "paired_geometry": bool, "offline_copies": int}``
            of albumentations transforms for training. ``offline_copies`` N > 0 is the study's protocol: each
            training image plus N-1 augmented copies drawn once before training (26 -> 26x the training set).
        cache_scale: images are decoded once and cached at ``ceil(image_size * cache_scale)``; ``auto``: at the
            source's size capped at max(256, 2 * image_size) when the training transforms warp (they then run at
            that size before the final resize), else at ``image_size``.
        normalization: ``imagenet``, ``dataset`` (each modality's train-split mean/std) or ``none`` (inputs in
            [0, 1], as the study fed them).
        split: ``dataset.split`` settings (see :class:`SplitSpec`) plus ``fold``.
        faces: the ``faces`` settings (:class:`~fer_lightning.faces.FaceSettings`): find the face in each camera
            and train on its crop (:mod:`.face_crops`); None: whole frames.
        seed: seeds shuffling and augmentation draws.
        passes_per_epoch: shuffled passes over the training set in one epoch; ``auto``: 1, or in a step budget
            enough for an epoch of at least ``budget.MIN_EPOCH_STEPS`` steps (a few-step epoch spends much of
            its time restarting the loader).
    """

    name = "dataset"

    def __init__(
        self,
        modality: str = "fusion",
        data_dir: str = "./data",
        classes: list[str] | None = None,
        image_size: int = 64,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int | str = "auto",
        augment: dict | None = None,
        normalization: str = "imagenet",
        split: dict | None = None,
        seed: int = 0,
        pin_memory: bool | None = None,
        name: str | None = None,
        cache_scale: float | str = "auto",
        passes_per_epoch: int | str = "auto",
        faces: dict | None = None,
    ):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise FERError(f"dataset.normalization={normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
        if name:
            self.name = name
        self.modality = modality
        self.modalities = cameras(modality)
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.configured_classes = list(classes) if classes else None
        self.image_size = number("dataset.image_size", image_size, 1, fix=" (the square side in pixels, e.g. 224)")
        self.batch_size = number("dataset.batch_size", batch_size, 1)
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else number("dataset.eval_batch_size", eval_batch_size, 1, fix=", or null for dataset.batch_size")
        )
        self.num_workers = resolve_workers(num_workers)
        self.augment = dict(augment or {})
        copies = self.augment.get("offline_copies") or 0
        self.offline_copies = number("augment.offline_copies", copies, 0, fix=" (0: online augmentation)")
        # auto: the source resolution, capped, where the augmentation warps (data/cache.auto_size)
        self.cache_scale = (
            "auto"
            if cache_scale == "auto"
            else number("dataset.cache_scale", cache_scale, 1, float, fix=" (auto, or 1 caches at the input size)")
        )
        self.cache_side: int | None = None
        # auto: 1, or in a step budget enough passes for an epoch of budget.MIN_EPOCH_STEPS (fer_lightning/budget.py)
        self.passes_setting = (
            "auto"
            if passes_per_epoch == "auto"
            else number("dataset.passes_per_epoch", passes_per_epoch, 1, fix=" (or auto)")
        )
        self.passes_per_epoch = 1 if passes_per_epoch == "auto" else self.passes_setting
        self.normalization = normalization
        split = dict(split or {})
        self.fold = split.get("fold")
        self.split_spec = SplitSpec.from_config(split)
        self.seed = number("seed", seed, 0)
        self.faces = FaceSettings.from_config(faces)
        self.face_table: face_crops.FaceTable | None = None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.classes: list[str] = []
        self.manifest_sha1: str | None = None
        self.rows: list[dict] = []
        self.stats: dict[str, Stats] = {}
        self._datasets: dict[str, FERDataset] = {}
        self._loaded_key: tuple | None = None
        self._expanded = False
        self._normalizer = Normalizer()
        # the split test_dataloader() serves: evaluate sets "val" to test the validation split
        self.test_split = "test"
        # called on each uint8 batch on the device before normalisation (robustness corruptions), or None
        self.batch_hook = None
        # evaluation: the prepared dataset is only read; a split other than the prepared one is drawn in memory
        self.read_only = False
        # "prepared", or "recomputed" (read-only, split settings other than split.json's), and those settings
        self.split_source = "prepared"
        self.prepared_split: dict | None = None

    @property
    def root(self) -> Path:
        """The prepared dataset's folder."""
        return self.data_dir / self.name

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def build_dataset(self) -> None:
        """Produces the prepared dataset (``manifest.csv`` ...) under :attr:`root`. Subclasses implement it."""
        if not self.manifest_path.is_file():
            raise FERError(f"{self.manifest_path}: no prepared dataset")

    def _lock(self) -> FileLock:
        """Serialises preparation across processes: parallel sweep jobs on a fresh data dir share one dataset."""
        locks = self.data_dir / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(locks / f"{self.root.relative_to(self.data_dir).as_posix().replace('/', '_')}.lock")

    def _require_prepared(self) -> None:
        if not self.manifest_path.is_file():
            raise FERError(
                f"{self.manifest_path}: no prepared dataset; evaluation only reads data: prepare it first "
                f"(python -m fer_lightning.prepare dataset={self.name} with the run's dataset settings), or pass "
                "paths.data_dir=<the data dir the run was trained on>"
            )

    def prepare_data(self) -> None:
        if self.read_only:
            self._require_prepared()
            return
        with self._lock():
            remove_stale_temporaries(self.root)  # left by a killed prepare (e.g. the contact sheet's)
            self.build_dataset()
            rows = ensure_splits(self.root, self.split_spec, log=log.warning)
            near_duplicates.record(self.root, rows, self.split_spec.near_duplicates, self.root / STATE)
            table = face_crops.face_table(self.root, rows, self.faces, self.modality)
            face_crops.check_kept(rows, table)  # before the records change: a run that cannot train changes none
            face_crops.show(self.root, table)

    def setup(self, stage: str | None = None) -> None:
        rows = self._read_splits()
        key = (self.manifest_sha1, self.fold, self.image_size, self.modality, self.faces.key())
        if key == self._loaded_key:
            return
        with self._lock():
            self.face_table = face_crops.face_table(self.root, rows, self.faces, self.modality)
        if self.face_table is not None:
            rows = self.face_table.kept(rows)
        self.classes = self._classes(rows)
        by_split = self._split(self._usable(rows))
        self.rows = rows
        self._datasets = self._make_datasets(rows, by_split)
        train = self._datasets["train"].images
        self.stats = {m: modality_stats(self.normalization, train[m]) for m in self.modalities}
        self._expanded = False
        self._loaded_key = key

    def _read_splits(self) -> list[dict]:
        """The manifest's rows with the configured split (drawn now when it differs) and fold applied."""
        if self.read_only:
            self._require_prepared()
        with self._lock():
            if self.read_only:
                split = read_splits(self.root, self.split_spec)
                rows, self.manifest_sha1 = split.rows, split.manifest_sha1
                self.split_source, self.prepared_split = split.source, split.prepared
            else:
                rows = ensure_splits(self.root, self.split_spec, log=log.warning)
                self.manifest_sha1 = manifest_sha1(self.manifest_path, rows)
        return apply_fold(rows, self.split_spec.folds, self.fold)

    def _usable(self, rows: list[dict]) -> list[dict]:
        """The rows with every image this modality needs; refuses none, a single class, or unpaired fusion rows."""
        usable = [r for r in rows if all(r[m] for m in self.modalities)]
        if not usable:
            raise FERError(
                f"{self.manifest_path}: no sample has {' and '.join(self.modalities)} images; try another modality"
            )
        found = sorted({r["label"] for r in usable})
        if len(found) < 2:
            raise FERError(
                f"{self.manifest_path}: every {' and '.join(self.modalities)} sample is of class {found[0]!r}, and "
                "a classifier needs at least 2 classes; add images of another class and prepare again"
            )
        if len(usable) < len(rows) and self.modality == "fusion":
            raise FERError(unpaired_message(self.manifest_path, rows))
        return usable

    def _split(self, usable: list[dict]) -> dict[str, list[dict]]:
        by_split = {s: [r for r in usable if r["split"] == s] for s in SPLITS}
        for s, split_rows in by_split.items():
            if not split_rows:
                raise FERError(
                    f"{self.manifest_path}: the {s} split is empty for modality={self.modality}; "
                    "add data or change dataset.split"
                )
        return by_split

    def _train_transform(self, geometric) -> PairTransform:
        return PairTransform(
            self.modalities,
            self.image_size,
            geometric=geometric,
            photometric=self.augment.get("photometric") or (),
            paired_geometry=self.augment.get("paired_geometry", True),
        )

    def _make_datasets(self, rows: list[dict], by_split: dict[str, list[dict]]) -> dict[str, FERDataset]:
        """One dataset per split over the decoded-once cache of each modality (rows keep their manifest index)."""
        eval_tf = PairTransform(self.modalities, self.image_size)
        train_tf = self._train_transform(self.augment.get("geometric") or ())
        size = self.cache_side = self._cache_side(rows)
        index = {r["sample_id"]: i for i, r in enumerate(rows)}
        label_of = {c: i for i, c in enumerate(self.classes)}
        cached = {}
        # under the data lock: ranks, sweep jobs and nodes sharing the data dir build each cache once, and never
        # remove the stale keys of one another's build while it is written
        with self._lock():
            for m in self.modalities:
                have = [i for i, r in enumerate(rows) if r[m]]
                position = {i: p for p, i in enumerate(have)}
                have_rows = [rows[i] for i in have]
                crops = self.face_table.variant(self.root, have_rows, m) if self.face_table is not None else None
                cached[m] = (cache_images(self.root, have_rows, m, size, crops), position)
        datasets = {}
        for s, split_rows in by_split.items():
            images = {m: c.subset([pos[index[r["sample_id"]]] for r in split_rows]) for m, (c, pos) in cached.items()}
            datasets[s] = FERDataset(
                images,
                np.array([label_of[r["label"]] for r in split_rows], dtype=np.int64),
                np.array([index[r["sample_id"]] for r in split_rows], dtype=np.int64),
                train_tf if s == "train" else eval_tf,
            )
        return datasets

    def offline_variants(self) -> list[PairTransform]:
        """One transform per geometric augmentation: the study drew its offline copies from each in turn."""
        return [self._train_transform(g) for g in offline_variants(self.augment.get("geometric") or ())]

    def _cache_side(self, rows: list[dict]) -> int:
        if self.cache_scale != "auto":
            return stored_size(self.image_size, self.cache_scale)
        if not self.augment.get("geometric"):
            return self.image_size  # nothing is warped: decode straight to the input size
        # one side for both modalities: a pair's images share one geometric draw, which needs equal shapes
        paths = [r[m] for r in rows for m in ("visible", "infrared") if r.get(m)]
        return auto_size(self.image_size, source_side(self.root, paths))

    def _expand_train(self) -> None:
        """The study's offline protocol, drawn only when training starts (evaluation never pays for it)."""
        if self.offline_copies and not self._expanded:
            eval_tf = self._datasets["val"].transform
            self._datasets["train"] = offline_expand(
                self._datasets["train"],
                self.offline_copies,
                eval_tf,
                self.offline_variants(),
                self.seed,
                self.num_workers,
            )
            self._expanded = True

    def _classes(self, rows: list[dict]) -> list[str]:
        found = sorted({r["label"] for r in rows})
        if self.configured_classes is None:
            return found
        unknown = [c for c in found if c not in self.configured_classes]
        if unknown:
            raise FERError(
                f"{self.manifest_path}: unknown class(es) {unknown}; expected "
                f"{self.configured_classes} (dataset.classes)"
            )
        return self.configured_classes

    def _loader(self, split: str, shuffle: bool, batch_size: int, **kwargs) -> DataLoader:
        ds = self._datasets[split]
        loader = ResumableLoader if split == "train" and shuffle else DataLoader
        return loader(
            ds,
            batch_size=batch_size,
            sampler=SeededSampler(len(ds), self.seed, shuffle, passes=self.passes_per_epoch if shuffle else 1),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            **kwargs,
        )

    def _train_progress(self) -> tuple[int, int]:
        """``(epoch, batches trained in it)`` of the trainer fitting this datamodule."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        self._expand_train()
        return self._loader("train", True, self.batch_size, progress=self._train_progress)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, False, self.eval_batch_size)

    def normalize(self, batch: dict) -> dict:
        """uint8 images -> float, scaled to [0, 1] and normalised with each modality's statistics."""
        return self._normalizer(batch, {m: self.stats[m] for m in self.modalities})

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.batch_hook is not None:
            batch = self.batch_hook(batch)
        return self.normalize(batch)

    def state_dict(self) -> dict:
        return {
            "manifest_sha1": self.manifest_sha1,
            "classes": self.classes,
            "stats": self.stats,
            "cache_side": self.cache_side,
            # predict crops a raw frame as the run did (data/face_crops.cropper)
            "faces": self.face_table.record() if self.face_table is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("manifest_sha1")
        if saved and self.manifest_sha1 and saved != self.manifest_sha1:
            log.warning(
                "%s changed since this checkpoint was written (sha1 %s, now %s): splits or samples may "
                "differ from the checkpoint's run",
                self.manifest_path,
                saved[:12],
                self.manifest_sha1[:12],
            )
        faces = (state.get("faces") or {}).get("table_sha1")
        if faces and self.face_table is not None and faces != self.face_table.meta["table_sha1"]:
            log.warning(
                "%s: the faces found differ from those this checkpoint's run trained on (another detector version "
                "or other images); the test crops may differ from its training crops",
                self.root / face_crops.FACES_DIR / f"{self.face_table.name}.csv",
            )
        if state.get("stats"):
            self.stats = {m: tuple(v) for m, v in state["stats"].items()}
        if state.get("cache_side"):
            # the side the checkpoint's run decoded to, as a scale: stored_size() then needs no source files
            self.cache_side = int(state["cache_side"])
            self.cache_scale = self.cache_side / self.image_size
