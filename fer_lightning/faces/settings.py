"""Face settings (the Hydra ``faces`` node) and the records the face functions return."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from fer_lightning.errors import FERError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in source pixels, x1/y1 exclusive

MODES = ("none", "detect", "align")
MISSING = ("keep", "reject")
CHOICES = ("largest", "central")
STATUSES = ("detected", "mapped", "full_frame", "rejected", "off")


@dataclass(frozen=True)
class FaceSettings:
    """What ``faces=none|detect|align`` sets. See docs/faces.md for what each key does."""

    mode: str = "none"
    missing: str = "keep"
    visible_detector: str = "dlib_skin"
    choose: str = "largest"
    margin: float = 0.25
    min_face: int = 12
    transform: tuple | None = None
    # thermal localiser (and the skin-colour detector): a warm region counts as a face when its box holds this
    # share of the frame's area ...
    thermal_min_area: float = 0.04
    thermal_max_area: float = 0.6
    # ... its height / width lies in this range and it fills this share of its box
    thermal_aspect: tuple[float, float] = (0.8, 2.2)
    thermal_min_fill: float = 0.45

    def __post_init__(self) -> None:
        self._check("mode", self.mode in MODES, " | ".join(MODES))
        self._check("missing", self.missing in MISSING, " | ".join(MISSING))
        self._check("choose", self.choose in CHOICES, " | ".join(CHOICES))
        self._check("margin", 0.0 <= self.margin <= 2.0, "a number in [0, 2]")
        self._check("min_face", self.min_face >= 1, "an integer >= 1")
        lo, hi = self.thermal_min_area, self.thermal_max_area
        self._check("thermal_min_area", 0.0 <= lo < hi, "a number >= 0 below thermal_max_area")
        self._check("thermal_max_area", 0.0 < hi <= 1.0, "a number in (0, 1]")
        a_lo, a_hi = self.thermal_aspect
        self._check("thermal_aspect", 0.0 < a_lo <= a_hi, "a pair [lo, hi] with 0 < lo <= hi")
        self._check("thermal_min_fill", 0.0 <= self.thermal_min_fill <= 1.0, "a number in [0, 1]")
        if self.transform is not None:
            shape = np.asarray(self.transform).shape
            self._check("transform", shape == (2, 3), "null or a 2x3 matrix [[a, b, tx], [c, d, ty]]")
        from fer_lightning.faces.visible import VISIBLE_DETECTORS

        self._check("visible_detector", self.visible_detector in VISIBLE_DETECTORS, " | ".join(VISIBLE_DETECTORS))

    def _check(self, key: str, ok: bool, valid: str) -> None:
        if not ok:
            raise FERError(f"faces.{key}={getattr(self, key)!r} is not valid: use {valid}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> FaceSettings:
        """The settings in the Hydra ``faces`` node (a DictConfig or a mapping); ``None`` is ``faces=none``."""
        if cfg is None:
            return cls()
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in dict(cfg).items():
            if key not in known:
                raise FERError(f"faces.{key} is not a face setting: use one of {', '.join(known)}")
            values[key] = _coerce(key, value, known[key].default)
        return cls(**values)

    def key(self) -> str:
        """A short hash of every setting that changes a crop; ``"none"`` when faces are off."""
        if self.mode == "none":
            return "none"
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _coerce(key: str, value: Any, default: Any) -> Any:
    try:
        if key == "transform":
            if value is None:
                return None
            return tuple(tuple(float(v) for v in row) for row in value)
        if key == "thermal_aspect":
            lo, hi = (float(v) for v in value)
            return lo, hi
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        want = {"transform": "null or a 2x3 matrix", "thermal_aspect": "a pair [lo, hi]"}.get(key)
        kind = "a string" if isinstance(default, str) else "an integer" if isinstance(default, int) else "a number"
        want = want or kind
        raise FERError(f"faces.{key}={value!r} is not valid: use {want}") from None


@dataclass
class Detection:
    box: Box
    score: float
    landmarks: np.ndarray | None = None  # (5, 2) source pixels: dlib's 5-point order, or None


@dataclass
class FaceResult:
    """Where the face is in each camera and how it was found (``status`` is one of :data:`STATUSES`)."""

    visible_box: Box | None
    infrared_box: Box | None
    status: str
    visible_landmarks: np.ndarray | None = None
    infrared_landmarks: np.ndarray | None = None
