"""Pair geometry: the visible->thermal transform and locating the face in a camera pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_lightning.errors import FERError
from fer_lightning.faces.settings import Box, FaceResult, FaceSettings


@dataclass
class PairTransform:
    matrix: np.ndarray  # 2x3, visible -> thermal source pixels
    n: int  # pairs it was estimated from (0: given in config)
    residual_px: float  # RMS corner error over those pairs

    def to_json(self) -> dict:
        return {"matrix": np.asarray(self.matrix).tolist(), "n": self.n, "residual_px": self.residual_px}

    @classmethod
    def from_json(cls, d: dict) -> PairTransform:
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

    def inverse(self) -> PairTransform:
        full = np.vstack([self.matrix, [0.0, 0.0, 1.0]])
        return PairTransform(np.linalg.inv(full)[:2], self.n, self.residual_px)


def estimate_transform(visible_boxes: list[Box], infrared_boxes: list[Box]) -> PairTransform:
    raise FERError("estimate_transform: not implemented yet")


def locate_pair(
    visible: np.ndarray | None, infrared: np.ndarray | None, settings: FaceSettings, transform: PairTransform | None
) -> FaceResult:
    if settings.mode == "none":
        return FaceResult(None, None, "off")
    return FaceResult(None, None, "full_frame" if settings.missing == "keep" else "rejected")
