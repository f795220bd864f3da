"""Visible-light face detectors, in a registry keyed by ``faces.visible_detector``.

- ``dlib_hog``: dlib's frontal face detector (HOG + linear SVM, built into the ``dlib-bin`` wheel, no model file),
  the detector for real photos. Its box covers brows to chin; it is grown to the whole face (forehead to chin,
  cheek to cheek) with :data:`DLIB_TO_FACE`, so that every detector returns the same kind of box.
- ``skin``: the largest face-shaped skin-coloured region (the YCrCb skin rule of Chai & Ngan 1999, then the
  same shape guards as the thermal localiser). A classical fallback that needs no library, but any skin-coloured
  surface of face shape fools it, and faces in bad light (dark, glare) lose their colour.
- ``dlib_skin`` (the default): dlib first, the skin rule when dlib finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import cv2
import numpy as np

from fer_lightning.errors import FERError
from fer_lightning.faces.blobs import face_candidates
from fer_lightning.faces.settings import Detection, FaceSettings

VisibleDetector = Callable[[np.ndarray, FaceSettings], list[Detection]]
VISIBLE_DETECTORS: dict[str, VisibleDetector] = {}
# dlib's box (brows to chin) grown to the face outline: fractions of its width/height added left, top, right, bottom
DLIB_TO_FACE = (0.1, 0.35, 0.1, 0.05)
# dlib scans for faces of at least 80 px; smaller frames are upsampled so that faces down to ~20 px are found
DLIB_MIN_SIDE = 320
# dlib's SVM score threshold offset: below 0 also returns weaker detections, which are kept only when there is
# no detection of score >= 0 (then the strongest weak one comes first)
DLIB_THRESHOLD = -1.0
# sensor noise is smoothed before dlib looks (sigma in px) and the frame's 1st-99th percentile stretched to the full
# range, so that dim and noisy frames keep their edges
DENOISE_SIGMA = 1.2
# YCrCb skin rule (Chai & Ngan 1999)
SKIN_CR = (133, 173)
SKIN_CB = (77, 127)


def register_visible_detector(name: str) -> Callable[[VisibleDetector], VisibleDetector]:
    def wrap(fn: VisibleDetector) -> VisibleDetector:
        VISIBLE_DETECTORS[name] = fn
        return fn

    return wrap


def as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:  # another bit depth, or a float frame: scaled so that its largest value is 255
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(0, None)
        a = (a * (255.0 / max(float(a.max(initial=0.0)), 1.0))).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


@cache
def _dlib_detector():
    try:
        import dlib
    except ImportError as exc:
        raise FERError("faces.visible_detector=dlib_hog needs dlib: pip install dlib-bin") from exc
    return dlib.get_frontal_face_detector()


@cache
def _shape_predictor():
    """dlib's 5-point landmark model from the optional ``face-recognition-models`` package, or None."""
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        return None
    return dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())


@register_visible_detector("dlib_hog")
def dlib_hog(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    upsample = 0
    while min(h, w) * 2**upsample < DLIB_MIN_SIDE and upsample < 3:
        upsample += 1
    rects, scores, _ = _dlib_detector().run(_denoised(rgb), upsample, DLIB_THRESHOLD)
    out = []
    for r, score in zip(rects, scores, strict=True):
        bw, bh = r.right() - r.left(), r.bottom() - r.top()
        gl, gt, gr, gb = DLIB_TO_FACE
        box = (r.left() - gl * bw, r.top() - gt * bh, r.right() + gr * bw, r.bottom() + gb * bh)
        box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
        if min(box[2] - box[0], box[3] - box[1]) >= settings.min_face:
            out.append(Detection(tuple(float(v) for v in box), float(score), _landmarks(rgb, r, settings)))
    strong = [d for d in out if d.score >= 0]
    return sorted(strong, key=lambda d: -d.score) or sorted(out, key=lambda d: -d.score)[:1]


def _denoised(rgb: np.ndarray) -> np.ndarray:
    smooth = cv2.GaussianBlur(rgb, (0, 0), DENOISE_SIGMA).astype(np.float64)
    lo, hi = np.percentile(smooth, [1, 99])
    return np.ascontiguousarray(np.clip((smooth - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8))


def _landmarks(rgb: np.ndarray, rect, settings: FaceSettings) -> np.ndarray | None:
    predictor = _shape_predictor() if settings.mode == "align" else None
    if predictor is None:
        return None
    shape = predictor(rgb, rect)
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    cr = (x[..., 0] - y) * 0.713 + 128
    cb = (x[..., 2] - y) * 0.564 + 128
    return (SKIN_CR[0] <= cr) & (cr <= SKIN_CR[1]) & (SKIN_CB[0] <= cb) & (cb <= SKIN_CB[1])


@register_visible_detector("skin")
def skin(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    rgb = as_rgb(image)
    if min(rgb.shape[:2]) < 2 * settings.min_face:
        return []
    return face_candidates(skin_mask(rgb), settings)


@register_visible_detector("dlib_skin")
def dlib_skin(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    """dlib's faces, else the skin rule's, scored -1 (weak: below any dlib detection kept)."""
    return dlib_hog(image, settings) or [Detection(d.box, -1.0) for d in skin(image, settings)]


def detect_visible(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    """Faces in an ``HxW`` or ``HxWx3`` uint8 RGB image, best first; none in a frame too small to hold one."""
    a = np.asarray(image)
    if a.ndim not in (2, 3) or min(a.shape[:2]) < settings.min_face:
        return []
    return VISIBLE_DETECTORS[settings.visible_detector](a, settings)
