"""The thermal face localiser: the largest warm region of face shape and size.

Skin is the warmest large surface in a room, so the face is a warm blob. The frame is scaled to [0, 1] between
its 1st and 99th percentile; at each of a ladder of thresholds the warm pixels are cleaned and split into
components (:mod:`.blobs`), and the face-shaped ones (size, aspect and fill ratio guards) are candidates. A low
threshold joins face, neck and warm clothes into one blob that fails the guards; a high one keeps only the
hottest spots, which fail the size guard; in between, the face stands alone. The largest candidate over all
thresholds wins. Small hot things (a mug, a lamp) fail the size guard, a radiator the aspect guard.
"""

from __future__ import annotations

import numpy as np

from fer_lightning.faces.blobs import area, face_candidates, iou
from fer_lightning.faces.settings import Detection, FaceSettings

# thresholds as quantiles of the frame, so that a hot object stretching the range does not push them past the face
LEVELS = np.linspace(0.3, 0.96, 12)
STABLE_IOU = 0.7
# a frame whose 1st-99th percentile span is below this share of its value range has nothing to find
MIN_CONTRAST = 0.02


def thermal_intensity(image: np.ndarray) -> np.ndarray | None:
    """``image`` as float in [0, 1] from its 1st to 99th percentile; ``None`` when it is flat (blank, grey).

    Colour frames (a false-colour palette) are read by their luminance, which rises with temperature in the
    iron and grey palettes; palettes whose brightness is not monotone in temperature (rainbow) are not read right.
    """
    a = np.asarray(image)
    full = float(np.iinfo(a.dtype).max) if np.issubdtype(a.dtype, np.integer) else max(float(np.nanmax(a)), 1.0)
    a = a.astype(np.float64)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114])[: a.shape[2]] if a.shape[2] >= 3 else a[..., 0]
    a = np.nan_to_num(a)
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
    """The candidates, most stable first: a candidate's score is the share of thresholds that give a candidate
    overlapping it at IoU >= :data:`STABLE_IOU` (a face's edge is sharp, so its box barely moves with the
    threshold, while blobs that merge face, hair and clothes change with every step); ties go to the larger box."""
    every = [d for found in levels for d in found]
    scored = []
    for d in every:
        hits = sum(any(iou(d.box, e.box) >= STABLE_IOU for e in found) for found in levels)
        x0, y0, x1, y1 = (int(v) for v in d.box)
        scored.append(Detection(d.box, hits / len(levels) * float(t[y0:y1, x0:x1].mean())))
    scored.sort(key=lambda d: (-d.score, -area(d.box)))
    out: list[Detection] = []
    for d in scored:  # one per face: the best of each overlapping group
        if all(iou(d.box, e.box) < STABLE_IOU for e in out):
            out.append(d)
    return out
