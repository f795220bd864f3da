"""The LightningDataModule every dataset's shares (the per-dataset ones are in ``datamodules.py``); the modality
is a constructor argument.

All of them read the same prepared layout (``<data_dir>/<name>/manifest.csv``); they differ only in how
``build_dataset()`` produces it (called by Lightning's ``prepare_data``, under a lock). Images leave the workers
as uint8 and are converted and normalised on the device (``on_after_batch_transfer``), which moves a quarter of
the bytes and keeps workers cheap.

The module wires parts that each do one job: :class:`~fer_lightning.data.prepared.PreparedDataset` (the files,
their lock and split), :class:`~fer_lightning.data.split_policy.SplitPolicy` (which rows serve which split),
:class:`~fer_lightning.data.cache_sizing.CacheSizing` (the decoded-once cache),
:class:`~fer_lightning.data.train_augmentation.TrainAugmentation` (online transforms and offline copies) and
:class:`~fer_lightning.data.normalize.InputNormalization` (the statistics).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from fer_lightning.data import face_crops, face_records
from fer_lightning.data.cache_sizing import CacheSizing, split_datasets
from fer_lightning.data.datasets import FERDataset, ResumableLoader, SeededSampler, resolve_workers
from fer_lightning.data.normalize import NORMALIZATIONS, InputNormalization, Stats
from fer_lightning.data.prepared import PreparedDataset
from fer_lightning.data.split_drawing import SplitSpec
from fer_lightning.data.split_policy import SplitPolicy
from fer_lightning.data.train_augmentation import TrainAugmentation
from fer_lightning.data.transforms import PairTransform
from fer_lightning.errors import FERError
from fer_lightning.faces import FaceSettings
from fer_lightning.modalities import cameras
from fer_lightning.validation import Choice, Number, checked

log = logging.getLogger(__name__)

# The datamodule's numbers and choices, checked here because it is also built without Hydra (tests, the benchmark)
RULES = {
    "dataset.image_size": Number(int, 1, lenient=True, hint=" (the square side in pixels, e.g. 224)"),
    "dataset.batch_size": Number(int, 1, lenient=True),
    "dataset.eval_batch_size": Number(int, 1, lenient=True, hint=", or null for dataset.batch_size"),
    "augment.offline_copies": Number(int, 0, lenient=True, hint=" (0: online augmentation)"),
    "dataset.cache_scale": Number(float, 1, words=("auto",), lenient=True, hint=" (1 caches at the input size)"),
    "dataset.passes_per_epoch": Number(int, 1, words=("auto",), lenient=True),
    "dataset.normalization": Choice(NORMALIZATIONS),
    "seed": Number(int, 0, lenient=True),
}


class ManifestDataModule(L.LightningDataModule):
    """Serves visible, infrared or fused batches from a prepared manifest.

    Args:
        modality: ``visible``, ``infrared`` or ``fusion``.
        data_dir: holds ``raw/<name>/`` (archives) and ``<name>/`` (the prepared dataset).
        classes: class names in label order; None takes the sorted labels found in the manifest.
        image_size: side of the square image fed to the network.
        batch_size / eval_batch_size: training and validation/test batch sizes.
        num_workers: DataLoader workers, or ``auto`` (see :func:`resolve_workers`).
        augment: the training augmentation (see :class:`TrainAugmentation`).
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
        read_only: evaluation: the prepared dataset is only read; a split other than the prepared one is drawn
            in memory.
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
        read_only: bool = False,
        faces: dict | None = None,
    ):
        super().__init__()
        checked(RULES, "dataset.normalization", normalization)
        self.normalizer = InputNormalization(normalization, cameras(modality))
        if name:
            self.name = name
        self.modality, self.modalities = modality, cameras(modality)
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.configured_classes = list(classes) if classes else None
        self.image_size = checked(RULES, "dataset.image_size", image_size)
        self.batch_size = checked(RULES, "dataset.batch_size", batch_size)
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else checked(RULES, "dataset.eval_batch_size", eval_batch_size)
        )
        self.num_workers = resolve_workers(num_workers)
        self.augment = dict(augment or {})
        copies = checked(RULES, "augment.offline_copies", self.augment.get("offline_copies") or 0)
        self.augmentation = TrainAugmentation(self.augment, self.modalities, self.image_size, copies)
        # auto: the source resolution, capped, where the augmentation warps (data/cache.auto_size)
        cache_scale = checked(RULES, "dataset.cache_scale", cache_scale)
        self.cache_sizing = CacheSizing(self.image_size, cache_scale, self.augmentation.warps)
        self.cache_side: int | None = None
        # auto: 1, or in a step budget enough passes for an epoch of budget.MIN_EPOCH_STEPS (fer_lightning/budget.py)
        self.passes_setting = checked(RULES, "dataset.passes_per_epoch", passes_per_epoch)
        self.passes_per_epoch = 1 if self.passes_setting == "auto" else self.passes_setting
        split = dict(split or {})
        self.fold = split.get("fold")
        self.split_spec = SplitSpec.from_config(split)
        self.seed = checked(RULES, "seed", seed)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.read_only = read_only
        self.faces = FaceSettings.from_config(faces)
        self.face_table: face_crops.FaceTable | None = None
        self.classes, self.rows, self.manifest_sha1 = [], [], None
        self._datasets: dict[str, FERDataset] = {}
        self._loaded_key: tuple | None = None
        self._expanded = False
        # "prepared", or "recomputed" (read-only, split settings other than split.json's), and those settings
        self.split_source = "prepared"
        self.prepared_split: dict | None = None

    @property
    def root(self) -> Path:
        """The prepared dataset's folder."""
        return self.data_dir / self.name

    @property
    def prepared(self) -> PreparedDataset:
        return PreparedDataset(self.data_dir, self.root, self.name, self.split_spec, self.fold, self.read_only)

    @property
    def manifest_path(self) -> Path:
        return self.prepared.manifest_path

    @property
    def offline_copies(self) -> int:
        return self.augmentation.offline_copies

    @property
    def cache_scale(self) -> float | str:
        return self.cache_sizing.scale

    @property
    def stats(self) -> dict[str, Stats]:
        return self.normalizer.stats

    def build_dataset(self) -> None:
        """Produces the prepared dataset (``manifest.csv`` ...) under :attr:`root`. Subclasses implement it."""
        if not self.manifest_path.is_file():
            raise FERError(f"{self.manifest_path}: no prepared dataset")

    def prepare_data(self) -> None:
        self.prepared.prepare(self.build_dataset, self._prepare_faces)

    def _prepare_faces(self, rows: list[dict]) -> None:
        table = face_crops.face_table(self.root, rows, self.faces, self.modality)
        face_crops.check_kept(rows, table)  # before the records change: a run that cannot train changes none
        face_records.show(self.root, table)

    def setup(self, stage: str | None = None) -> None:
        prepared = self.prepared
        read = prepared.read()
        self.manifest_sha1, self.split_source, self.prepared_split = (
            read.manifest_sha1,
            read.split_source,
            read.prepared_split,
        )
        key = (self.manifest_sha1, self.fold, self.image_size, self.modality, self.faces.key())
        if key == self._loaded_key:
            return
        rows = read.rows
        with prepared.lock():
            self.face_table = face_crops.face_table(self.root, rows, self.faces, self.modality)
        if self.face_table is not None:
            rows = self.face_table.kept(rows)
        policy = SplitPolicy(self.modality, self.configured_classes, prepared.manifest_path)
        self.classes = policy.classes(rows)
        by_split = policy.by_split(rows)
        self.rows = rows
        self.cache_side = self.cache_sizing.side(self.root, rows)
        aug = self.augmentation
        transforms = {"train": aug.train_transform(), "eval": aug.eval_transform()}
        self._datasets = split_datasets(
            self.root, rows, by_split, self.classes, self.cache_side, transforms, prepared.lock(), self.face_table
        )
        self.normalizer.fit(self._datasets["train"].images)
        self._expanded = False
        self._loaded_key = key

    def offline_variants(self) -> list[PairTransform]:
        return self.augmentation.offline_variants()

    def _expand_train(self) -> None:
        """The study's offline protocol, drawn only when training starts (evaluation never pays for it)."""
        if self.offline_copies and not self._expanded:
            train, plain = self._datasets["train"], self._datasets["val"].transform
            self._datasets["train"] = self.augmentation.expand(train, plain, self.seed, self.num_workers)
            self._expanded = True

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

    def eval_dataloader(self, split: str) -> DataLoader:
        """``split``'s samples in manifest order, unshuffled (validation, test, or another split tested)."""
        return self._loader(split, False, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def normalize(self, batch: dict) -> dict:
        """uint8 images -> float, scaled to [0, 1] and normalised with each modality's statistics."""
        return self.normalizer(batch)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
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
        """A checkpoint's statistics and cache side; whether its manifest differs is the run's check
        (:mod:`fer_lightning.runs.data_checks`)."""
        faces = (state.get("faces") or {}).get("table_sha1")
        if faces and self.face_table is not None and faces != self.face_table.meta["table_sha1"]:
            log.warning(
                "%s: the faces found differ from those this checkpoint's run trained on (another detector version "
                "or other images); the test crops may differ from its training crops",
                self.root / face_crops.FACES_DIR / f"{self.face_table.name}.csv",
            )
        if state.get("stats"):
            self.normalizer.restore(state["stats"])
        if state.get("cache_side"):
            self.cache_side = int(state["cache_side"])
            self.cache_sizing.restore(self.cache_side)

