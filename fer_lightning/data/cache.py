"""Decode once: images are decoded, converted and resized a single time per run, then served from memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fer_lightning.data.images import load_rgb


def decode_resized(path: Path, size: int) -> np.ndarray:
    img = Image.fromarray(load_rgb(path))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def load_array(manifest_dir: Path, rows: list[dict], modality: str, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 images of one modality for ``rows``."""
    out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        out[i] = decode_resized(manifest_dir / row[modality], size)
    return out
