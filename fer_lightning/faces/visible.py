"""Visible-light face detectors, in a registry keyed by ``faces.visible_detector``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fer_lightning.faces.settings import Detection, FaceSettings

VisibleDetector = Callable[[np.ndarray, FaceSettings], list[Detection]]
VISIBLE_DETECTORS: dict[str, VisibleDetector] = {}


def register_visible_detector(name: str) -> Callable[[VisibleDetector], VisibleDetector]:
    def wrap(fn: VisibleDetector) -> VisibleDetector:
        VISIBLE_DETECTORS[name] = fn
        return fn

    return wrap


@register_visible_detector("dlib_hog")
def _dlib_hog(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    return []


def detect_visible(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    """Faces in an ``HxW`` or ``HxWx3`` uint8 RGB image, best first."""
    return VISIBLE_DETECTORS[settings.visible_detector](image, settings)
