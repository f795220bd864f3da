"""Inputs for prepare and the runs on what it prepares: composed prepare configs, folder datasets, archive sets
with content unique per image."""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import py7zr
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import CONF
from tests.helpers.archive_fixtures import (
    CORRUPT_JPEG,
    build_7z,
    build_zip,
    file_blob_id,
    image_bytes,
)

FAST_TRAIN = ["debug=fast", "dataset.image_size=32", "dataset.batch_size=8", "model.backbone.weights=null"]


def prepare_cfg(overrides: list[str], data_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="prepare", overrides=[*overrides, f"paths.data_dir={data_dir}"])


def distinct_content(folder: Path) -> dict[str, str]:
    """Rewrites every image of an archive set with content unique to its archive and name.

    The shared NVIE fixture reuses the same pixels across classes; prepare rightly drops such duplicates
    (they would leak between splits), which would leave one class here.
    """
    blobs = {}
    for archive in sorted(folder.iterdir()):
        with TemporaryDirectory() as tmp:
            if archive.suffix == ".zip":
                with zipfile.ZipFile(archive) as zf:
                    members = {n: zf.read(n) for n in zf.namelist()}
            else:
                with py7zr.SevenZipFile(archive) as sz:
                    sz.extractall(tmp)
                members = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        for name, data in members.items():
            suffix = Path(name).suffix.lower()
            if suffix in (".jpg", ".png") and "__MACOSX" not in name and data != CORRUPT_JPEG:
                seed = zlib.crc32(f"{archive.name}/{name}".encode())
                mode = "L" if "-Ir" in archive.name else "RGB"
                members[name] = image_bytes(seed, "PNG" if suffix == ".png" else "JPEG", mode=mode)
        (build_7z if archive.suffix == ".7z" else build_zip)(archive, members)
        blobs[archive.name] = file_blob_id(archive)
    return blobs


def copy_raw(published, dataset: str, data_dir: Path) -> Path:
    raw = data_dir / "raw" / dataset
    shutil.copytree(published[dataset][0], raw)
    return raw


def write_image(path: Path, seed: int, mode: str = "RGB", size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        Image.fromarray(rng.integers(1000, 9000, (size, size), dtype=np.uint16)).save(path)
    else:
        pixels = rng.integers(0, 256, (size, size, 4 if mode == "RGBA" else 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGBA" if mode == "RGBA" else "RGB").convert(mode).save(path)
    return path


def make_folder(root: Path, classes=("Angry", "Happy"), n: int = 7, modalities=("visible", "infrared")) -> Path:
    for ci, c in enumerate(classes):
        for i in range(n):
            if "visible" in modalities:
                write_image(root / "visible" / c / f"s{i}_{c}.JPG", 1000 * ci + i)
            if "infrared" in modalities:
                # other class-folder case, other extension, a 16-bit and a grayscale thermal image
                mode = "I;16" if i == 0 else "L"
                ext = ".tif" if mode == "I;16" else ".png"
                write_image(root / "infrared" / c.lower() / f"s{i}_{c}_IR{ext}", 5000 + 1000 * ci + i, mode)
    return root


def folder_cfg(root: Path, data: Path, *extra: str):
    return prepare_cfg(["dataset=folder", f"dataset.root={root}", *extra], data)
