"""Square crops around a face box, and eye-level alignment when landmarks are given.

``detect``: the square of side ``max(w, h) * (1 + 2 * margin)`` centred on the box; where it runs past the frame
the missing pixels are black (zero), so the face keeps its place and size in the crop.

``align`` with landmarks: a similarity transform puts the two eye centres level at :data:`EYE_TEMPLATE` (fractions
of the output side: left eye at (0.35, 0.4), right eye at (0.65, 0.4)) in a square of the same side as the
``detect`` crop. Without landmarks (or with both eyes on one pixel), ``align`` gives the ``detect`` crop.
"""

from __future__ import annotations

import cv2
import numpy as np

from fer_lightning.faces.settings import Box, FaceSettings

EYE_TEMPLATE = ((0.35, 0.4), (0.65, 0.4))


def square(box: Box, margin: float) -> tuple[float, float, float]:
    """Centre x, centre y and side of the crop square around ``box``."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + 2 * margin)


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eye centres of dlib's 5-point landmarks (two corners per eye, then the nose), left one in the image first;
    with 2 points, they are the eyes."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    a, b = (pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)) if len(pts) >= 4 else (pts[0], pts[1])
    return (a, b) if a[0] <= b[0] else (b, a)


def _warp(image: np.ndarray, matrix: np.ndarray, side: int) -> np.ndarray:
    a = np.ascontiguousarray(image)
    if a.dtype == bool or a.dtype.kind not in "uf" or a.dtype == np.uint32:
        a = a.astype(np.float32)
    out = cv2.warpAffine(a, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if out.ndim < image.ndim:  # cv2 drops a trailing channel axis of length 1
        out = out[..., None]
    return out.astype(image.dtype, copy=False)


def crop(image: np.ndarray, box: Box | None, settings: FaceSettings, landmarks: np.ndarray | None = None) -> np.ndarray:
    """The face crop of ``image`` (any dtype, HxW or HxWxC); ``image`` itself when ``box`` is None or faces are off."""
    if box is None or settings.mode == "none":
        return image
    cx, cy, side = square(box, settings.margin)
    n = max(1, round(side))
    eyes = eye_centres(landmarks) if settings.mode == "align" and landmarks is not None else None
    if eyes is not None and np.hypot(*(eyes[1] - eyes[0])) >= 1.0:  # eyes a pixel apart or more give a direction
        left, right = eyes
        (tlx, tly), (trx, _) = EYE_TEMPLATE
        d = right - left
        scale = (trx - tlx) * n / float(np.hypot(*d))
        angle = float(np.arctan2(d[1], d[0]))
        c, s = np.cos(-angle) * scale, np.sin(-angle) * scale
        rot = np.array([[c, -s], [s, c]])
        shift = np.array([tlx * n, tly * n]) - rot @ left
        return _warp(image, np.hstack([rot, shift[:, None]]), n)
    x0, y0 = round(cx - n / 2), round(cy - n / 2)
    h, w = image.shape[:2]
    out = np.zeros((n, n, *image.shape[2:]), dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + n), min(h, y0 + n)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out
