"""Image corruptions for robustness evaluation: what a failing camera does to one modality's image.

:func:`corrupt` takes a decoded (H, W, 3) uint8 image and returns a corrupted copy. It is a pure function of
``(image, kind, severity, seed)``; the caller derives ``seed`` per sample (:func:`sample_seed`). Severity 0 is the
identity; 1..5 get monotonically worse: every random draw is independent of the severity and the affected regions
are nested, so a higher severity changes every pixel at least as much as a lower one (blur aside, which only grows
its sigma).

- ``noise``: additive Gaussian noise (std 6..64 grey levels).
- ``blur``: Gaussian blur, a defocused lens (sigma 1..6 % of the image side).
- ``occlusion``: a grey square over the face (side 15..55 % of the image side).
- ``hotspot``: a hot object or glare, a Gaussian blob blended towards white.
- ``stripes``: banding, a fixed offset per row (or column) band, as uncalibrated sensors show.
- ``contrast``: loss of contrast towards the image mean (contrast 0.75..0.1).
- ``dead``: dead pixels stuck at black (5..100 % of them; severity 5 is a constant image, a dead sensor).

Each kind is one function registered with ``@register_corruption("<name>")``: ``fn(image, level, rng)`` takes the
image as float64 (H, W, 3) grey levels, ``level`` 0..4 (severity 1..5) and a seeded generator, and returns the
corrupted image, which :func:`corrupt` rounds and clips to uint8.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from fer_lightning.errors import FERError
from fer_lightning.modalities import CAMERAS
from fer_lightning.validation import Number

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
# name -> corruption, in registration order (the order of the robustness grid and of its error messages)
KINDS: dict[str, Corruption] = {}
SEVERITIES = (0, 1, 2, 3, 4, 5)
SEVERITY = Number(int, SEVERITIES[0], SEVERITIES[-1], fix="use an integer from 0 (none) to 5 (worst)")

# Per kind, the strength at severities 1..5 (index 0 is severity 1).
_NOISE_STD = (6.0, 12.0, 24.0, 40.0, 64.0)  # grey levels
_BLUR_SIGMA = (0.01, 0.02, 0.03, 0.045, 0.06)  # fraction of the shorter side
_OCCLUSION_SIDE = (0.15, 0.25, 0.35, 0.45, 0.55)  # fraction of the shorter side
_HOTSPOT = ((0.08, 0.5), (0.12, 0.65), (0.16, 0.8), (0.2, 0.9), (0.25, 1.0))  # (radius fraction, peak blend)
_STRIPE_AMPLITUDE = (6.0, 12.0, 20.0, 32.0, 48.0)  # std of the band offsets, grey levels
_CONTRAST = (0.75, 0.55, 0.4, 0.25, 0.1)  # remaining contrast
_DEAD_FRACTION = (0.05, 0.15, 0.35, 0.65, 1.0)


def check(kind: str, severity: int, key: str = "corrupt.<modality>") -> None:
    """Raises one FERError naming ``key`` (e.g. ``corrupt.infrared``) or ``corrupt.severity``."""
    if kind not in KINDS:
        raise FERError(f"{key}={kind}: unknown corruption; use one of {', '.join(KINDS)}")
    SEVERITY.check("corrupt.severity", severity)


def check_missing(missing: str | None) -> str | None:
    """Validates the ``missing=`` option: the modality to leave out, or None."""
    if missing in (None, "", "none", "null"):
        return None
    if missing not in CAMERAS:
        raise FERError(f"missing={missing}: use visible, infrared or null")
    return missing


def sample_seed(seed: int, index: int) -> int:
    """The seed for one sample's corruption, from the run's corruption seed and the sample's index."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def register_corruption(name: str) -> Callable[[Corruption], Corruption]:
    """Registers ``fn(image, level, rng)`` as the corruption kind ``name`` (``corrupt.<camera>=<name>``)."""

    def add(fn: Corruption) -> Corruption:
        KINDS[name] = fn
        return fn

    return add


def corrupt(image: np.ndarray, kind: str, severity: int, seed: int, key: str = "corrupt.<modality>") -> np.ndarray:
    """A corrupted copy of ``image`` ((H, W, 3) uint8), deterministic in ``seed``; severity 0 returns a copy."""
    check(kind, severity, key)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt() takes an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if severity == 0:
        return image.copy()
    out = KINDS[kind](image.astype(np.float64), severity - 1, np.random.default_rng(seed))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@register_corruption("noise")
def _noise(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    return img + _NOISE_STD[level] * rng.standard_normal(img.shape)


@register_corruption("blur")
def _blur(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    radius = _BLUR_SIGMA[level] * min(img.shape[:2])
    return np.asarray(Image.fromarray(img.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)))


@register_corruption("occlusion")
def _occlusion(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    side = min(h, w)
    # The centre is drawn so that the largest patch fits: the patches of all severities are nested.
    half_max = _OCCLUSION_SIDE[-1] * side / 2
    cy, cx = rng.uniform(half_max, h - half_max), rng.uniform(half_max, w - half_max)
    grey = rng.uniform(40, 200)
    half = _OCCLUSION_SIDE[level] * side / 2
    ys, xs = np.ogrid[:h, :w]
    inside = (np.abs(ys + 0.5 - cy) <= half) & (np.abs(xs + 0.5 - cx) <= half)
    return np.where(inside[..., None], grey, img)


@register_corruption("hotspot")
def _hotspot(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    radius, peak = _HOTSPOT[level]
    ys, xs = np.ogrid[:h, :w]
    blob = peak * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (radius * min(h, w)) ** 2))
    return img + (255.0 - img) * blob[..., None]


@register_corruption("stripes")
def _stripes(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    rows = rng.random() < 0.5
    length = h if rows else w
    band = max(1, min(h, w) // 32)
    offsets = np.repeat(rng.standard_normal(-(-length // band)), band)[:length] * _STRIPE_AMPLITUDE[level]
    return img + (offsets[:, None, None] if rows else offsets[None, :, None])


@register_corruption("contrast")
def _contrast(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    mean = img.mean()
    return mean + (img - mean) * _CONTRAST[level]


@register_corruption("dead")
def _dead(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    # Each pixel dies at a fixed rank, so the dead set only grows with severity.
    rank = rng.permutation(h * w).reshape(h, w)
    dead = rank < round(_DEAD_FRACTION[level] * h * w)
    return np.where(dead[..., None], 0.0, img)
