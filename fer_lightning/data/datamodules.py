"""One LightningDataModule per dataset; the modality is a constructor argument.

All of them read the same prepared layout (``<data_dir>/<name>/manifest.csv``); they differ only in how
``prepare()`` produces it. Images leave the workers as uint8 and are converted and normalised on the device
(``on_after_batch_transfer``), which moves a quarter of the bytes and keeps workers cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from fer_lightning.data import synthetic
from fer_lightning.data.cache import auto_size, cache_images, source_side, stored_size
from fer_lightning.data.datasets import FERDataset, SeededSampler, offline_expand
from fer_lightning.data.manifest import (
    SplitSpec,
    apply_fold,
    atomic_write_text,
    ensure_splits,
    file_sha1,
    write_manifest,
)
from fer_lightning.data.transforms import PairTransform, offline_variants
from fer_lightning.errors import FERError

log = logging.getLogger(__name__)

IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
NORMALIZATIONS = ("imagenet", "dataset", "none")


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
        seed: seeds shuffling and augmentation draws.
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
    ):
        super().__init__()
        if modality not in ("visible", "infrared", "fusion"):
            raise FERError(f"modality={modality!r}: use visible, infrared or fusion")
        if normalization not in NORMALIZATIONS:
            raise FERError(f"dataset.normalization={normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
        if name:
            self.name = name
        self.modality = modality
        self.modalities = ("visible", "infrared") if modality == "fusion" else (modality,)
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.configured_classes = list(classes) if classes else None
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = resolve_workers(num_workers)
        self.augment = dict(augment or {})
        self.offline_copies = int(self.augment.get("offline_copies") or 0)
        if self.offline_copies < 0:
            raise FERError(f"augment.offline_copies={self.offline_copies}: use 0 (online) or N >= 1")
        try:
            self.cache_scale = cache_scale if cache_scale == "auto" else float(cache_scale)
        except (TypeError, ValueError):
            self.cache_scale = 0.0
        if self.cache_scale != "auto" and self.cache_scale < 1:
            raise FERError(f"dataset.cache_scale={cache_scale}: use auto or a number >= 1")
        self.cache_side: int | None = None
        self.normalization = normalization
        split = dict(split or {})
        self.fold = split.get("fold")
        self.split_spec = SplitSpec.from_config(split)
        self.seed = int(seed)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.classes: list[str] = []
        self.manifest_sha1: str | None = None
        self.rows: list[dict] = []
        self.stats: dict[str, tuple[list[float], list[float]]] = {}
        self._datasets: dict[str, FERDataset] = {}
        self._loaded_key: tuple | None = None
        self._expanded = False
        self._norm: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def root(self) -> Path:
        """The prepared dataset's folder."""
        return self.data_dir / self.name

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.csv"

    def prepare(self) -> None:
        """Produces ``manifest.csv`` under :attr:`root` when it is missing. Subclasses implement it."""
        if not self.manifest_path.is_file():
            raise FERError(f"{self.manifest_path}: no prepared dataset")

    @contextlib.contextmanager
    def _lock(self):
        """Serialises preparation across processes: parallel sweep jobs on a fresh data dir share one dataset."""
        locks = self.data_dir / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{self.root.relative_to(self.data_dir).as_posix().replace('/', '_')}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def prepare_data(self) -> None:
        with self._lock():
            self.prepare()
            ensure_splits(self.root, self.split_spec, log=log.warning)

    def setup(self, stage: str | None = None) -> None:
        with self._lock():
            rows = ensure_splits(self.root, self.split_spec, log=log.warning)
            self.manifest_sha1 = file_sha1(self.manifest_path)
        rows = apply_fold(rows, self.split_spec.folds, self.fold)
        key = (self.manifest_sha1, self.fold, self.image_size, self.modality)
        if key == self._loaded_key:
            return
        self.classes = self._classes(rows)
        usable = [r for r in rows if all(r[m] for m in self.modalities)]
        if not usable:
            raise FERError(
                f"{self.manifest_path}: no sample has {' and '.join(self.modalities)} images; try another modality"
            )
        if len(usable) < len(rows) and self.modality == "fusion":
            from fer_lightning.data.prepared import unpaired_message

            raise FERError(unpaired_message(self.manifest_path, rows))
        self.rows = rows
        index = {r["sample_id"]: i for i, r in enumerate(rows)}
        label_of = {c: i for i, c in enumerate(self.classes)}
        by_split = {s: [r for r in usable if r["split"] == s] for s in ("train", "val", "test")}
        for s in ("train", "val", "test"):
            if not by_split[s]:
                raise FERError(
                    f"{self.manifest_path}: the {s} split is empty for modality={self.modality}; "
                    "add data or change dataset.split"
                )
        eval_tf = PairTransform(self.modalities, self.image_size)
        train_tf = PairTransform(
            self.modalities,
            self.image_size,
            geometric=self.augment.get("geometric") or (),
            photometric=self.augment.get("photometric") or (),
            paired_geometry=self.augment.get("paired_geometry", True),
        )
        size = self.cache_side = self._cache_side(rows)
        cached = {}
        for m in self.modalities:
            have = [i for i, r in enumerate(rows) if r[m]]
            position = {i: p for p, i in enumerate(have)}
            cached[m] = (cache_images(self.root, [rows[i] for i in have], m, size), position)
        self._datasets = {}
        for s, split_rows in by_split.items():
            images = {m: c.subset([pos[index[r["sample_id"]]] for r in split_rows]) for m, (c, pos) in cached.items()}
            self._datasets[s] = FERDataset(
                images,
                np.array([label_of[r["label"]] for r in split_rows], dtype=np.int64),
                np.array([index[r["sample_id"]] for r in split_rows], dtype=np.int64),
                train_tf if s == "train" else eval_tf,
            )
        self.stats = {m: self._stats(m) for m in self.modalities}
        self._expanded = False
        self._loaded_key = key

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
            variants = [
                PairTransform(
                    self.modalities,
                    self.image_size,
                    geometric=g,
                    photometric=self.augment.get("photometric") or (),
                    paired_geometry=self.augment.get("paired_geometry", True),
                )
                for g in offline_variants(self.augment.get("geometric") or ())
            ]
            self._datasets["train"] = offline_expand(
                self._datasets["train"], self.offline_copies, eval_tf, variants, self.seed, self.num_workers
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

    def _stats(self, modality: str) -> tuple[list[float], list[float]]:
        if self.normalization == "none":
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        if self.normalization == "imagenet":
            return IMAGENET_STATS
        images = self._datasets["train"].images[modality]
        # Per-image sums in float64: one image at a time, never the whole split as floats.
        total, sq, n = np.zeros(3), np.zeros(3), 0
        for i in range(len(images)):
            px = images[i].reshape(-1, 3).astype(np.float64) / 255
            total += px.sum(0)
            sq += (px * px).sum(0)
            n += len(px)
        mean = total / n
        return mean.tolist(), np.maximum(np.sqrt(np.maximum(sq / n - mean * mean, 0)), 1e-3).tolist()

    def split_size(self, split: str) -> int:
        return len(self._datasets[split])

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        ds = self._datasets[split]
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=SeededSampler(len(ds), self.seed, shuffle),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        self._expand_train()
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)

    def normalize(self, batch: dict) -> dict:
        """uint8 images -> float, scaled to [0, 1] and normalised with each modality's statistics."""
        out = dict(batch)
        for m in self.modalities:
            if m in batch and batch[m].dtype == torch.uint8:
                scale, shift = self._affine(m, batch[m].device)
                out[m] = torch.addcmul(shift, batch[m].float(), scale)
        return out

    def _affine(self, modality: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # (x/255 - mean)/std as one fused multiply-add, kept per device: no host->device copy per batch.
        key = (modality, str(device), tuple(map(tuple, self.stats[modality])))
        if key not in self._norm:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in self.stats[modality])
            self._norm[key] = ((1 / (255 * std)).to(device), (-mean / std).to(device))
        return self._norm[key]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.normalize(batch)

    def state_dict(self) -> dict:
        return {
            "manifest_sha1": self.manifest_sha1,
            "classes": self.classes,
            "stats": self.stats,
            "cache_side": self.cache_side,
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
        if state.get("stats"):
            self.stats = {m: tuple(v) for m, v in state["stats"].items()}
        if state.get("cache_side"):
            # the side the checkpoint's run decoded to, as a scale: stored_size() then needs no source files
            self.cache_side = int(state["cache_side"])
            self.cache_scale = self.cache_side / self.image_size


class SyntheticDataModule(ManifestDataModule):
    """Procedurally drawn visible + infrared faces (5 VIRI expressions); generated once, no download.

    Args:
        generator: arguments of :func:`fer_lightning.data.synthetic.generate`; changing them regenerates.
    """

    name = "synthetic"

    def __init__(self, generator: dict | None = None, **kwargs):
        kwargs.setdefault("classes", list(synthetic.CLASSES))
        super().__init__(**kwargs)
        self.generator = dict(generator or {})

    def prepare(self) -> None:
        settings = json.dumps(self.generator, sort_keys=True)
        stamp = self.root / "generator.json"
        if self.manifest_path.is_file() and stamp.is_file() and stamp.read_text() == settings:
            return
        log.info("generating the synthetic dataset in %s", self.root)
        # Generate beside the target and swap in at the end, so an interrupted run leaves no partial dataset.
        tmp = self.root.with_name(f".{self.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            rows = synthetic.generate(tmp, **self.generator)
        except (TypeError, ValueError) as exc:  # a bad dataset.generator key or value
            shutil.rmtree(tmp, ignore_errors=True)
            raise FERError(f"dataset.generator: {exc}") from exc
        for r in rows:
            r["split"] = ""
            for m in ("visible", "infrared"):
                r[f"{m}_sha1"] = file_sha1(tmp / r[m])
        write_manifest(tmp / "manifest.csv", rows)
        atomic_write_text(tmp / "generator.json", settings)
        atomic_write_text(tmp / "rejected.csv", "file,reason\n")  # every generated file is used
        from fer_lightning.plots import contact_sheet

        contact_sheet(tmp, rows, tmp / "contact_sheet.png")
        if self.root.exists():
            shutil.rmtree(self.root)
        tmp.rename(self.root)


class ImageFilesDataModule(ManifestDataModule):
    """Image files on disk, checked and paired into a manifest by :mod:`fer_lightning.data.prepared`.

    Args:
        pairing: ``auto`` (file stems, else sorted order where counts are equal, with a warning) or
            ``strict``.
        sixteen_bit / sixteen_bit_range: how 16-bit images become 8-bit: ``minmax`` per image, or ``fixed``
            (clipped to the range, comparable across images); they are converted once, at preparation.
    """

    def __init__(
        self,
        pairing: str = "auto",
        sixteen_bit: str = "minmax",
        sixteen_bit_range: tuple[float, float] = (0, 65535),
        **kwargs,
    ):
        super().__init__(**kwargs)
        from fer_lightning.data.prepared import ImageOptions

        self.image_options = ImageOptions(pairing, sixteen_bit, tuple(sixteen_bit_range))


class PublishedDataModule(ImageFilesDataModule):
    """A dataset prepared from the study's published archives in ``<data_dir>/raw/<name>/``.

    Args:
        download: fetch missing archives (``dataset.download``); false never touches the network.
        verify: refuse archives whose git blob id differs (``dataset.verify``); false only warns.
        base_url: where archives are fetched from: a prefix, or a template with ``{name}`` and ``{commit}``;
            null is the study's repository at its pinned commit.
        retries: download retries per archive, with exponential backoff.
    """

    def __init__(
        self, download: bool = True, verify: bool = True, base_url: str | None = None, retries: int = 3, **kwargs
    ):
        super().__init__(**kwargs)
        self.download = download
        self.verify = verify
        self.base_url = base_url
        self.retries = int(retries)

    def prepare(self) -> None:
        from fer_lightning.data.prepared import prepare_published

        prepare_published(
            self.name,
            self.data_dir / "raw" / self.name,
            self.root,
            self.image_options,
            download=self.download,
            verify=self.verify,
            base_url=self.base_url,
            retries=self.retries,
        )


class VIRIDataModule(PublishedDataModule):
    name = "viri"


class NVIEDataModule(PublishedDataModule):
    name = "nvie"


class FolderDataModule(ImageFilesDataModule):
    """A user's own data: ``<root>/visible/<Class>/*`` and/or ``<root>/infrared/<Class>/*``.

    Classes are the folder names, pairs match by file stem. The images stay where they are; the prepared
    dataset (manifest, rejected.csv, contact sheet) goes to ``<data_dir>/folder/<root name>-<8 hex of the
    absolute root's sha1>/``, so two folder datasets never share one.
    """

    name = "folder"

    def __init__(self, root: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not root:
            raise FERError("dataset=folder needs dataset.root=DIR (DIR/visible/<Class>/*, DIR/infrared/<Class>/*)")
        self.source = Path(root).expanduser().resolve()

    @property
    def root(self) -> Path:
        digest = hashlib.sha1(str(self.source).encode()).hexdigest()[:8]
        return self.data_dir / "folder" / f"{self.source.name}-{digest}"

    def prepare(self) -> None:
        from fer_lightning.data.prepared import prepare_folder

        prepare_folder(self.source, self.root, self.image_options)
