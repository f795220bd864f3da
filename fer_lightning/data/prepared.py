"""A prepared dataset on disk (``<data_dir>/<name>/``): built once under a lock that every process using the data
dir shares, and read back with the configured split and fold."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from fer_lightning.data import near_duplicates
from fer_lightning.data.assemble import STATE
from fer_lightning.data.manifest import MANIFEST, ensure_splits, manifest_sha1, read_splits
from fer_lightning.data.split_drawing import SplitSpec, apply_fold
from fer_lightning.errors import FERError
from fer_lightning.io import remove_stale_temporaries

log = logging.getLogger(__name__)


@dataclass
class PreparedRows:
    """The manifest's rows as a run reads them, with where their split came from."""

    rows: list[dict]
    manifest_sha1: str
    # "prepared", or "recomputed" (read-only, split settings other than split.json's), and split.json's settings
    split_source: str = "prepared"
    prepared_split: dict | None = None


class PreparedDataset:
    """The files under ``root``; ``read_only`` (evaluation): never built or re-split, a split other than the
    prepared one is drawn in memory."""

    def __init__(
        self, data_dir: Path, root: Path, name: str, split: SplitSpec, fold: int | None, read_only: bool = False
    ):
        self.data_dir, self.root, self.name = data_dir, root, name
        self.split, self.fold, self.read_only = split, fold, read_only

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def lock(self) -> FileLock:
        """Serialises preparation across processes: parallel sweep jobs on a fresh data dir share one dataset."""
        locks = self.data_dir / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(locks / f"{self.root.relative_to(self.data_dir).as_posix().replace('/', '_')}.lock")

    def require(self) -> None:
        if not self.manifest_path.is_file():
            raise FERError(
                f"{self.manifest_path}: no prepared dataset; evaluation only reads data: prepare it first "
                f"(python -m fer_lightning.prepare dataset={self.name} with the run's dataset settings), or pass "
                "paths.data_dir=<the data dir the run was trained on>"
            )

    def prepare(self, build: Callable[[], None], then: Callable[[list[dict]], None] | None = None) -> None:
        """``build()`` (the dataset's own preparation), the split, then ``then(rows)`` (the face step), under the
        lock; read-only: only checks."""
        if self.read_only:
            self.require()
            return
        with self.lock():
            remove_stale_temporaries(self.root)  # left by a killed prepare (e.g. the contact sheet's)
            build()
            rows = ensure_splits(self.root, self.split, log=log.warning)
            near_duplicates.record(self.root, rows, self.split.near_duplicates, self.root / STATE)
            if then is not None:
                then(rows)

    def read(self) -> PreparedRows:
        """The manifest's rows with the configured split (drawn now when it differs) and fold applied."""
        if self.read_only:
            self.require()
        with self.lock():
            if self.read_only:
                split = read_splits(self.root, self.split)
                read = PreparedRows(split.rows, split.manifest_sha1, split.source, split.prepared)
            else:
                rows = ensure_splits(self.root, self.split, log=log.warning)
                read = PreparedRows(rows, manifest_sha1(self.manifest_path, rows))
        read.rows = apply_fold(read.rows, self.split.folds, self.fold)
        return read
