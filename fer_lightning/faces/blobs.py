"""Face-shaped regions of a mask: the classical localiser behind the thermal detector and the skin-colour one.

A mask (warm pixels, skin-coloured pixels) is cleaned by a morphological opening and closing, split into
connected components, and each component that could be a face by its size, aspect and fill ratio becomes a
candidate. Its box runs from the component's top to the row below its widest row where it narrows to the neck.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fer_lightning.faces.settings import Box, Detection, FaceSettings

# below this width, the component has narrowed from the face to the neck (a face at 80 % of its half-height
# below the centre is still 60 % as wide as at its widest)
NECK_WIDTH = 0.7


def clean(mask: np.ndarray) -> np.ndarray:
    """``mask`` without specks and thin bridges (opening), with small holes closed (closing, hole filling)."""
    k = max(1, round(min(mask.shape) / 60))
    element = np.ones((2 * k + 1, 2 * k + 1), dtype=bool)
    out = ndimage.binary_opening(mask, element)
    out = ndimage.binary_closing(out, element)
    return ndimage.binary_fill_holes(out)


def face_box(component: np.ndarray) -> tuple[int, int, int, int]:
    """The box ``x0, y0, x1, y1`` (exclusive) of the face in a component: from its top down to the first row that
    is narrower than :data:`NECK_WIDTH` of the widest row above it (the neck; shoulders below it do not count)."""
    widths = component.sum(axis=1)
    rows = np.flatnonzero(widths)
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    span = widths[top:bottom]
    narrow = np.flatnonzero(span < NECK_WIDTH * np.maximum.accumulate(span))
    if narrow.size:
        bottom = top + int(narrow[0])
    cols = np.flatnonzero(component[top:bottom].any(axis=0))
    return int(cols[0]), top, int(cols[-1]) + 1, bottom


def face_candidates(mask: np.ndarray, settings: FaceSettings) -> list[Detection]:
    """The face-shaped components of ``mask`` (after :func:`clean`), largest first; score = share of the frame."""
    h, w = mask.shape
    labels, _ = ndimage.label(clean(mask))
    out = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        component = labels == index
        x0, y0, x1, y1 = face_box(component)
        bw, bh = x1 - x0, y1 - y0
        if min(bw, bh) < settings.min_face:
            continue
        area = bw * bh / (h * w)
        fill = component[y0:y1, x0:x1].sum() / (bw * bh)
        lo, hi = settings.thermal_aspect
        if (
            settings.thermal_min_area <= area <= settings.thermal_max_area
            and lo <= bh / bw <= hi
            and fill >= settings.thermal_min_fill
        ):
            out.append(Detection((float(x0), float(y0), float(x1), float(y1)), float(area)))
    return sorted(out, key=lambda d: -d.score)


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0
