"""Faces, not frames: find the face in each camera, map it across the pair, crop (and align) it.

:func:`detect_visible` runs a registered visible-light detector, :func:`detect_thermal` the thermal localiser,
:func:`locate_pair` combines both through a :class:`CameraTransform`, and :func:`crop` cuts the face out.
docs/faces.md describes the choices, statuses and licences.
"""

from fer_lightning.faces.crop import crop
from fer_lightning.faces.pairs import CameraTransform, estimate_transform, locate_pair
from fer_lightning.faces.settings import STATUSES, Box, Detection, FaceResult, FaceSettings
from fer_lightning.faces.thermal import detect_thermal
from fer_lightning.faces.visible import VISIBLE_DETECTORS, detect_visible, register_visible_detector

__all__ = [
    "STATUSES",
    "VISIBLE_DETECTORS",
    "Box",
    "CameraTransform",
    "Detection",
    "FaceResult",
    "FaceSettings",
    "crop",
    "detect_thermal",
    "detect_visible",
    "estimate_transform",
    "locate_pair",
    "register_visible_detector",
]
