"""Pair geometry: the visible->thermal transform and locating the face in a camera pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_lightning.errors import FERError
from fer_lightning.faces.blobs import area, iou
from fer_lightning.faces.settings import Box, Detection, FaceResult, FaceSettings
from fer_lightning.faces.thermal import detect_thermal
from fer_lightning.faces.visible import detect_visible

MIN_PAIRS = 3
TRIM_FACTOR = 3.0
TRIM_ROUNDS = 2
AGREE = 0.3
# the documented choice between faces applies among the confident ones: a score at least this share of the best
CONFIDENT = 0.5


@dataclass
class CameraTransform:
    matrix: np.ndarray  # 2x3, visible -> thermal source pixels
    n: int  # pairs it was estimated from (0: given in config)
    residual_px: float  # RMS corner error over those pairs

    def to_json(self) -> dict:
        return {"matrix": np.asarray(self.matrix).tolist(), "n": self.n, "residual_px": self.residual_px}

    @classmethod
    def from_json(cls, d: dict) -> CameraTransform:
        matrix = np.asarray(d["matrix"], dtype=np.float64).reshape(2, 3)
        return cls(matrix, int(d.get("n", 0)), float(d.get("residual_px", 0.0)))

    def map_points(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]

    def map_box(self, box: Box) -> Box:
        x0, y0, x1, y1 = box
        corners = self.map_points(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def inverse(self) -> CameraTransform:
        full = np.vstack([self.matrix, [0.0, 0.0, 1.0]])
        return CameraTransform(np.linalg.inv(full)[:2], self.n, self.residual_px)


def estimate_transform(visible_boxes: list[Box], infrared_boxes: list[Box]) -> CameraTransform:
    """The visible->thermal map fitted by least squares to the corners of boxes found in both cameras.

    The model is a scale and a shift per axis (``x' = sx x + tx``, ``y' = sy y + ty``): axis-aligned boxes carry
    no rotation, so a rotation or shear fitted to their corners would be noise. Pairs whose RMS corner error is
    over :data:`TRIM_FACTOR` times the median are dropped and the map refitted (:data:`TRIM_ROUNDS` times), so a few
    wrong detections do not bend it; ``n`` counts the pairs kept. Needs 3 pairs or more.
    """
    if len(visible_boxes) != len(infrared_boxes):
        raise FERError("estimate_transform: the visible and infrared box lists differ in length")
    if len(visible_boxes) < MIN_PAIRS:
        raise FERError(
            f"faces: {len(visible_boxes)} pairs with a face found in both cameras, need {MIN_PAIRS} to estimate the "
            "visible->infrared transform; set faces.transform in the config instead"
        )
    v = np.asarray(visible_boxes, dtype=np.float64).reshape(-1, 4)
    r = np.asarray(infrared_boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.ones(len(v), dtype=bool)
    for _ in range(TRIM_ROUNDS + 1):
        matrix = _fit(v[keep], r[keep])
        mapped = np.concatenate(
            [v[:, :2] @ matrix[:, :2].T + matrix[:, 2], v[:, 2:] @ matrix[:, :2].T + matrix[:, 2]], 1
        )
        error = np.sqrt(((mapped - r) ** 2).reshape(-1, 4, 1).sum(axis=2).mean(axis=1))  # RMS corner error per pair
        limit = max(TRIM_FACTOR * float(np.median(error[keep])), 1.0)
        if (error <= limit).sum() < MIN_PAIRS:
            break
        keep = error <= limit
    return CameraTransform(matrix, int(keep.sum()), float(np.sqrt(np.mean(error[keep] ** 2))))


def _fit(v: np.ndarray, r: np.ndarray) -> np.ndarray:
    matrix = np.zeros((2, 3))
    for axis in (0, 1):
        x = np.concatenate([v[:, axis], v[:, axis + 2]])
        y = np.concatenate([r[:, axis], r[:, axis + 2]])
        (scale, shift), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], axis=1), y, rcond=None)
        matrix[axis, axis], matrix[axis, 2] = scale, shift
    return matrix


def choose(detections: list[Detection], shape: tuple[int, ...], how: str) -> Detection | None:
    """``largest`` (box area) or ``central`` (box centre nearest the frame centre) among the confident
    ``detections`` (score >= :data:`CONFIDENT` of the best; detectors return candidates best first)."""
    if not detections:
        return None
    best = detections[0].score
    detections = [d for d in detections if best <= 0 or d.score >= CONFIDENT * best] or detections[:1]
    if how == "central":
        cy, cx = shape[0] / 2, shape[1] / 2
        return min(
            detections, key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2
        )
    return max(detections, key=lambda d: area(d.box))


def clip_box(box: Box, shape: tuple[int, ...]) -> Box | None:
    h, w = shape[:2]
    x0, y0, x1, y1 = max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def frame_ratio(visible: np.ndarray, infrared: np.ndarray) -> CameraTransform:
    """Without an estimated transform, a box keeps its place relative to the frame."""
    (vh, vw), (rh, rw) = visible.shape[:2], infrared.shape[:2]
    return CameraTransform(np.array([[rw / vw, 0.0, 0.0], [0.0, rh / vh, 0.0]]), 0, float("nan"))


def locate_pair(
    visible: np.ndarray | None, infrared: np.ndarray | None, settings: FaceSettings, transform: CameraTransform | None
) -> FaceResult:
    """Find the face in each camera given; map a box found in one camera into the other that missed it.

    ``settings.transform`` (config ``faces.transform``) overrides ``transform``; with neither, a box is mapped by
    its place relative to the frame. A weak visible detection (score < 0: dlib below its threshold, or the skin
    rule) whose mapped box misses the thermal face (IoU < :data:`AGREE`) gives way to the thermal box. Visible
    landmarks are mapped into the thermal frame. See docs/faces.md for the statuses.
    """
    if settings.mode == "none":
        return FaceResult(None, None, "off")
    if settings.transform is not None:
        transform = CameraTransform(np.asarray(settings.transform, dtype=np.float64), 0, 0.0)
    vis = choose(detect_visible(visible, settings), visible.shape, settings.choose) if visible is not None else None
    ir = choose(detect_thermal(infrared, settings), infrared.shape, settings.choose) if infrared is not None else None
    if vis is None and ir is None:
        return FaceResult(None, None, "full_frame" if settings.missing == "keep" else "rejected")
    if vis and ir and transform is not None and vis.score < 0 and iou(transform.map_box(vis.box), ir.box) < AGREE:
        vis = None  # a weak visible detection that the thermal face contradicts: the thermal box is mapped across
    marks = _marks(vis)
    given = [a is not None for a in (visible, infrared)]
    if [vis is not None, ir is not None] == given:
        ir_marks = transform.map_points(marks) if marks is not None and ir and transform is not None else _marks(ir)
        return FaceResult(vis.box if vis else None, ir.box if ir else None, "detected", marks, ir_marks)
    if transform is None:
        transform = frame_ratio(visible, infrared)
    if vis is not None:
        mapped = None if marks is None else transform.map_points(marks)
        return FaceResult(vis.box, clip_box(transform.map_box(vis.box), infrared.shape), "mapped", marks, mapped)
    back = transform.inverse()
    return FaceResult(clip_box(back.map_box(ir.box), visible.shape), ir.box, "mapped", None, _marks(ir))


def _marks(detection: Detection | None) -> np.ndarray | None:
    return None if detection is None or detection.landmarks is None else np.asarray(detection.landmarks, float)
