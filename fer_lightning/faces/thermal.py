"""The thermal face localiser: the largest warm region of face shape and size.

Skin is the warmest large surface in a room, so the face is a warm blob. The frame is scaled to [0, 1] between
its 1st and 99th percentile; at each of a ladder of thresholds the warm pixels are cleaned and split into
components (:mod:`.blobs`), and the face-shaped ones (size, aspect and fill ratio guards) are candidates. A low
threshold joins face, neck and warm clothes into one blob that fails the guards; a high one keeps only the
hottest spots, which fail the size guard; in between, the face stands alone. Candidates are ranked by how
stable they are over the thresholds and how much warmer they are than their surround (:func:`stable`). Small hot
things (a mug, a lamp) fail the size guard, a radiator the aspect and size guards.
"""

from __future__ import annotations

import numpy as np

from fer_lightning.faces.blobs import area, face_candidates, iou
from fer_lightning.faces.settings import Detection, FaceSettings

# thresholds as quantiles of the frame, so that a hot object stretching the range does not push them past the face
LEVELS = np.linspace(0.3, 0.97, 24)
STABLE_IOU = 0.7
RING = 0.25
# two candidates are one region when their intersection covers this share of the smaller box
NESTED = 0.5
# a frame whose 1st-99th percentile span is below this share of its value range has nothing to find
MIN_CONTRAST = 0.02


def thermal_intensity(image: np.ndarray) -> np.ndarray | None:
    """``image`` as float in [0, 1] from its 1st to 99th percentile; ``None`` when it is flat (blank, grey): its
    span is under :data:`MIN_CONTRAST` of the dtype's range (of its largest value for a float frame; NaN and
    infinities count as 0).

    Colour frames (a false-colour palette) are read by their luminance, which rises with temperature in the
    iron and grey palettes; palettes whose brightness is not monotone in temperature (rainbow) are not read right.
    """
    a = np.asarray(image)
    integer = np.issubdtype(a.dtype, np.integer)
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    full = float(np.iinfo(image.dtype).max) if integer else max(float(np.abs(a).max()), 1.0)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114]) if a.shape[2] >= 3 else a[..., 0]
    lo, hi = np.percentile(a, [1, 99])
    if hi - lo < MIN_CONTRAST * full:
        return None
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def detect_thermal(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    """Faces in an ``HxW`` uint8/uint16 (or float) or ``HxWx3`` thermal frame, best first.

    A frame smaller than ``2 * min_face`` on a side, or without contrast (blank, grey), gives no detection.
    """
    a = np.asarray(image)
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 2 * settings.min_face:
        return []
    t = thermal_intensity(a)
    if t is None:
        return []
    levels = [face_candidates(t > level, settings) for level in np.unique(np.quantile(t, LEVELS))]
    return stable(levels, t)


def stable(levels: list[list[Detection]], t: np.ndarray) -> list[Detection]:
    """The candidates, best first, by stability times contrast.

    Stability: the share of thresholds that give a candidate overlapping it at IoU >= :data:`STABLE_IOU` (a face's
    edge is sharp, so its box barely moves with the threshold). Contrast: how much warmer the box is than the band
    above and beside it (:data:`RING` of its size; not below, where a face has its warm neck); the hot core of a face
    has warm skin around it and a blob of face and clothes has cooler clothes inside, so both score below the face."""
    every = [d for found in levels for d in found]
    scored = []
    for d in every:
        hits = sum(any(iou(d.box, e.box) >= STABLE_IOU for e in found) for found in levels)
        scored.append(Detection(d.box, hits / len(levels) * contrast(t, d.box)))
    scored.sort(key=lambda d: (-d.score, -area(d.box)))
    out: list[Detection] = []
    for d in scored:  # one per face: the best of each overlapping or nested group
        if all(iou(d.box, e.box) < STABLE_IOU and overlap(d.box, e.box) < NESTED for e in out):
            out.append(d)
    return out


def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    return inter / max(min(area(a), area(b)), 1e-9)


def contrast(t: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Mean of ``t`` in ``box`` less its mean in the band above, left and right of it (clipped at the frame)."""
    w = t.shape[1]
    x0, y0, x1, y1 = (int(v) for v in box)
    dx, dy = round((x1 - x0) * RING), round((y1 - y0) * RING)
    ox0, oy0, ox1, oy1 = max(0, x0 - dx), max(0, y0 - dy), min(w, x1 + dx), y1
    inner = t[y0:y1, x0:x1]
    outer = t[oy0:oy1, ox0:ox1]
    ring = outer.size - inner.size
    if ring <= 0:
        return float(inner.mean())
    return float(inner.mean() - (outer.sum() - inner.sum()) / ring)
