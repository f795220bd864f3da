"""Decode once: every image of one modality is decoded, converted and resized a single time into a uint8 .npy
file under the prepared dataset, then memory-mapped by every run, epoch and worker.

The file name carries a key over everything that changes the bytes: the manifest's image columns (paths and
their ``<modality>_sha1`` content hashes, in order), the stored size, the modality, the source files' sizes
and mtimes and the decoder version; for face crops (:class:`Variant`, data/face_crops.py) also the face table the
crops come from, and the file's name starts with the face settings' key. A changed manifest or size selects a new
file and the old one (of the same face settings) is removed;
a manifest edit that only moves samples between splits keeps the cache, since rows are looked up by position.
A JSON sidecar written after the array holds its shape and CRC32s of every row; loading checks the file size
and a sample of rows, so a truncated or corrupted file is rebuilt rather than trained on.
Deleting ``<dataset>/cache/`` at any time is safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fer_lightning.data.datasets import available_cores
from fer_lightning.data.images import decode_resized
from fer_lightning.io import atomic_path, atomic_write_text, remove_stale_temporaries

log = logging.getLogger(__name__)

# Bump when decode_resized changes its output, so old caches are not reused.
CACHE_VERSION = 1
CACHE_DIR = "cache"
# Rows whose CRC is checked on every load (all of them with full=True).
CHECK_ROWS = 32


# cache_scale=auto caches at the source's size, at most max(AUTO_MAX_SIDE, AUTO_MAX_SCALE * image_size): enough
# for warps not to be interpolated at the input size (a small cache cost accuracy on small real data:
# docs/benchmarks.md#on-real-held-out-sets), without holding 4k photos in memory.
AUTO_MAX_SIDE = 256
AUTO_MAX_SCALE = 2
# Source sizes are read from at most this many image headers, spread over the manifest.
AUTO_SAMPLE = 200


def stored_size(image_size: int, scale: float) -> int:
    """The side images are cached at for a numeric ``dataset.cache_scale``."""
    # round(): a scale recorded as side / image_size gives back that side, not side + 1 from float error
    return max(int(image_size), math.ceil(round(image_size * scale, 6)))


def source_side(manifest_dir: Path, paths: Sequence[str]) -> int:
    """The median longer side of the images (header reads only, of at most AUTO_SAMPLE files)."""
    picks = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), AUTO_SAMPLE)).round().astype(np.int64))
    sides = []
    for i in picks:
        with Image.open(Path(manifest_dir) / paths[i]) as img:
            sides.append(max(img.size))
    return int(np.median(sides))


def auto_size(image_size: int, source: int) -> int:
    """``cache_scale=auto`` for a recipe that warps: the source side, capped, never below the input size."""
    return max(int(image_size), min(int(source), max(AUTO_MAX_SIDE, AUTO_MAX_SCALE * int(image_size))))


class CachedImages:
    """A read-only (N, S, S, 3) uint8 view of selected rows of a cache file, opened lazily in each process.

    Pickles as its path (not its pixels): DataLoader workers, whatever the start method, map the same pages.
    """

    def __init__(self, path: Path, rows: np.ndarray, shape: tuple[int, ...]):
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.full_shape = tuple(shape)
        self._mm: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._mm is None:
            self._mm = np.load(self.path, mmap_mode="r")
        return self._mm

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.full_shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[self.rows[i]]

    def subset(self, positions: Sequence[int] | np.ndarray) -> CachedImages:
        return CachedImages(self.path, self.rows[np.asarray(positions, dtype=np.int64)], self.full_shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.array[self.rows]
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}


def _fingerprint(manifest_dir: Path, paths: list[str]) -> str:
    """Sizes and mtimes of the source files: a replaced image invalidates the cache, same manifest or not."""
    h = hashlib.sha1()
    for p in paths:
        st = (manifest_dir / p).stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _row_crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).data)


def _check_rows(n: int) -> np.ndarray:
    if n == 0:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(n, CHECK_ROWS)).round().astype(np.int64))


def _valid(npy: Path, meta_path: Path, key: str, paths: list[str], full: bool = False) -> dict | None:
    """The sidecar when ``npy`` is complete and matches it, else None (with the reason logged)."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key or meta.get("paths") != paths:
            return None
        if npy.stat().st_size != meta["file_size"]:
            log.warning("%s: size %d, expected %d: rebuilding", npy, npy.stat().st_size, meta["file_size"])
            return None
        arr = np.load(npy, mmap_mode="r")
        if list(arr.shape) != meta["shape"] or arr.dtype != np.uint8:
            log.warning("%s: shape %s does not match its sidecar: rebuilding", npy, arr.shape)
            return None
        crcs = meta["crc32"]
        rows = np.arange(len(crcs)) if full else _check_rows(len(crcs))
        bad = [int(i) for i in rows if _row_crc(arr[i]) != crcs[i]]
        if bad:
            log.warning("%s: row(s) %s fail their checksum: rebuilding", npy, bad[:5])
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class Variant:
    """Rows that are not the whole decoded image (face crops): ``name`` prefixes the file's name (stale files of
    other variants are never removed), ``key`` is what its content depends on beyond the source files, and
    ``decode(i, size)`` gives row ``i``."""

    name: str
    key: str
    decode: Callable[[int, int], np.ndarray]


def _build(
    npy: Path, meta_path: Path, key: str, manifest_dir: Path, paths: list[str], size: int, variant: Variant | None
) -> dict:
    log.info("decoding %d images once into %s", len(paths), npy)
    crcs = [0] * len(paths)
    with atomic_path(npy) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))

        def work(i: int) -> None:
            arr[i] = variant.decode(i, size) if variant else decode_resized(manifest_dir / paths[i], size)
            crcs[i] = _row_crc(arr[i])

        # PIL releases the GIL while decoding and resizing, so threads use every core without pickling pixels.
        with ThreadPoolExecutor(max(1, min(available_cores(), 16))) as pool:
            list(pool.map(work, range(len(paths))))
        arr.flush()
        meta = {
            "key": key,
            "version": CACHE_VERSION,
            "shape": [len(paths), size, size, 3],
            "file_size": tmp.stat().st_size,
            "paths": paths,
            "crc32": crcs,
        }
    # The sidecar goes last: a crash before it leaves an array that fails validation and is rebuilt.
    atomic_write_text(meta_path, json.dumps(meta))
    return meta


def cache_images(
    manifest_dir: Path, rows: list[dict], modality: str, size: int, variant: Variant | None = None
) -> CachedImages:
    """All images of ``modality`` in ``rows`` at ``size`` x ``size``, from the cache (built when missing/stale);
    with ``variant``, its rows (face crops) instead of the whole images.

    Row ``i`` of the result is ``rows[i]`` (rows without a ``modality`` image must be left out by the caller).
    """
    manifest_dir = Path(manifest_dir)
    paths = [r[modality] for r in rows]
    columns = [[r[modality], r.get(f"{modality}_sha1") or ""] for r in rows]
    material = [CACHE_VERSION, columns, modality, size, _fingerprint(manifest_dir, paths)]
    key = hashlib.sha1(json.dumps(material + ([variant.key] if variant else [])).encode()).hexdigest()[:16]
    folder = manifest_dir / CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)  # a build killed half-way leaves a temporary as large as the cache
    # a variant's name comes first, so that the plain files' glob below never matches a variant's
    stem = f"{variant.name}-{modality}-{size}px" if variant else f"{modality}-{size}px"
    npy = folder / f"{stem}-{key}.npy"
    meta_path = npy.with_suffix(".json")
    meta = _valid(npy, meta_path, key, paths) if npy.is_file() else None
    if meta is None:
        meta = _build(npy, meta_path, key, manifest_dir, paths, size, variant)
        for old in folder.glob(f"{stem}-*"):  # stale keys of this modality and size
            if old.name not in (npy.name, meta_path.name):
                old.unlink(missing_ok=True)
    return CachedImages(npy, np.arange(len(paths)), tuple(meta["shape"]))
