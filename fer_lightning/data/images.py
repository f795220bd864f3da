"""Read any image the archives may hold as an (H, W, 3) uint8 array."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from fer_lightning.errors import FERError, one_line

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)

# Modes whose samples do not fit in 8 bits; they need an explicit intensity mapping.
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class UnreadableImage(FERError):
    """An image file that Pillow cannot decode completely."""

    def reason(self, path: str | Path) -> str:
        """Why, without the file's name: a rejected.csv row names it already, and short reasons group."""
        cause = self.__cause__
        detail = one_line(cause) if cause is not None else str(self)
        return detail.replace(f"'{path}'", "").replace(str(path), "").strip(" :") or "undecodable"


def is_image_name(name: str | Path) -> bool:
    """True when the file extension (any case) is one of :data:`IMAGE_EXTENSIONS`."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(
    path: str | Path,
    *,
    sixteen_bit: Literal["minmax", "fixed"] = "minmax",
    fixed_range: tuple[float, float] = (0, 65535),
    draft: int | None = None,
) -> np.ndarray:
    """Decode ``path`` to an (H, W, 3) uint8 array with EXIF orientation applied.

    ``draft``: a JPEG is decoded at the smallest of its 1/2, 1/4, 1/8 scales that keeps both sides at least this
    many pixels (several times faster, for thumbnails); other formats are decoded whole.

    Grayscale, palette and CMYK images are converted to RGB. Images with an alpha channel are
    composited on black (transparent pixels become 0), which keeps background pixels at the value
    a thermal camera gives cold regions. High-bit-depth images (``I;16*``, ``I``, ``F``) are mapped to
    8 bits either per image (``"minmax"``: min -> 0, max -> 255, a constant image -> all zeros) or with
    ``"fixed"``: values are clipped to ``fixed_range`` and scaled linearly, so intensities stay
    comparable across images (the right choice for radiometric thermal data).

    Raises:
        UnreadableImage: the file is missing, not an image, truncated or otherwise undecodable.
        ValueError: ``sixteen_bit`` or ``fixed_range`` is invalid (a programming error).
    """
    if sixteen_bit not in ("minmax", "fixed"):
        raise ValueError(f"sixteen_bit must be 'minmax' or 'fixed', got {sixteen_bit!r}")
    lo, hi = fixed_range
    if not hi > lo:
        raise ValueError(f"fixed_range must be (low, high) with high > low, got {fixed_range!r}")
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning would otherwise be printed once per huge file.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if draft:
                    img.draft(None, (draft, draft))
                # Image.open is lazy: only load() decodes the pixels and detects truncation.
                img.load()
                return _to_rgb_array(img, sixteen_bit, (float(lo), float(hi)))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = one_line(exc) or type(exc).__name__
        raise UnreadableImage(
            f"{path}: cannot decode image ({reason}); delete the file or re-extract its archive"
        ) from exc


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error):
        # Broken EXIF metadata must not cost us an otherwise valid image; keep the stored orientation.
        return img


def _to_rgb_array(img: Image.Image, sixteen_bit: str, fixed_range: tuple[float, float]) -> np.ndarray:
    img = _apply_orientation(img)
    if img.mode in _HIGH_BIT_MODES:
        gray = _scale_high_bit(np.asarray(img, dtype=np.float64), sixteen_bit, fixed_range)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)
        return np.rint(rgb).astype(np.uint8)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def _scale_high_bit(values: np.ndarray, sixteen_bit: str, fixed_range: tuple[float, float]) -> np.ndarray:
    if values.ndim == 3:  # multi-channel high-bit data is not expected; average it to gray
        values = values.mean(axis=2)
    if sixteen_bit == "fixed":
        lo, hi = fixed_range
        values = np.clip(values, lo, hi)
    else:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        lo, hi = float(finite.min()), float(finite.max())
        if hi == lo:
            return np.zeros(values.shape, dtype=np.uint8)
        values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    scaled = (values - lo) * (255.0 / (hi - lo))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def decode_resized(path: str | Path, size: int) -> np.ndarray:
    """``path`` decoded (:func:`load_rgb`) and resized to ``size`` x ``size``: a row of the decode-once cache.

    Here, not in the cache module, so that the ONNX runtime (:mod:`fer_lightning.runtime`) shares it without torch.
    """
    return resized(load_rgb(path), size)


def resized(array: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3) uint8 image resized to ``size`` x ``size`` as the decode-once cache resizes."""
    img = Image.fromarray(array)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)
