"""Procedural paired visible + infrared face images for five expressions.

The zero-download default dataset. Each sample is one face geometry (subject identity + expression +
pose) rendered twice: as an RGB photo with clutter, lighting and noise, and as a temperature field shown
through a FLIR-style false-colour palette. The two modalities are made to fail on different samples
(bad lighting spoils the photo, sensor artifacts spoil the thermal image), so fusing them pays off.

Face geometry lives in "face units": origin at the face centre, x to the right, y down, face half-width
about 1. A :class:`Pose` maps face units to pixels of one camera.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("Angry", "Happy", "Neutral", "Sad", "Surprise")
# Per-sample conditions beside the manifest, to slice results by them (e.g. fusion on bad-light photos).
CONDITIONS = "conditions.csv"


# --------------------------------------------------------------------------------------------- palettes


def _lut(stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    pos = np.array([p for p, _ in stops])
    rgb = np.array([c for _, c in stops], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, pos, rgb[:, ch]) for ch in range(3)], axis=1)
    lut = np.round(lut).astype(np.uint8)
    lut.setflags(write=False)
    return lut


PALETTES: dict[str, np.ndarray] = {
    # FLIR "ironbow": black, indigo, magenta, red, orange, yellow, near white.
    "iron": _lut(
        [
            (0.00, (0, 0, 10)),
            (0.12, (25, 0, 85)),
            (0.28, (95, 0, 150)),
            (0.42, (160, 15, 140)),
            (0.55, (210, 50, 80)),
            (0.68, (240, 100, 20)),
            (0.82, (255, 170, 0)),
            (0.93, (255, 225, 70)),
            (1.00, (255, 255, 230)),
        ]
    ),
    "rainbow": _lut(
        [
            (0.00, (10, 0, 40)),
            (0.15, (40, 0, 160)),
            (0.30, (0, 80, 255)),
            (0.45, (0, 200, 220)),
            (0.58, (0, 210, 80)),
            (0.70, (200, 230, 0)),
            (0.82, (255, 150, 0)),
            (0.93, (240, 20, 0)),
            (1.00, (255, 230, 230)),
        ]
    ),
    "gray": _lut([(0.0, (0, 0, 0)), (1.0, (255, 255, 255))]),
}


# ------------------------------------------------------------------------------------------------ knobs


@dataclass(frozen=True)
class Knobs:
    """Difficulty settings. Fractions are per sample; with ``disjoint_failures`` the visible failures
    (bad light) and the infrared failures (artifacts) never hit the same sample."""

    # Expression strength range, 1 = full expression. The default exaggerates a little: at 64 px and 12 epochs
    # from scratch, (0.9, 1.2) left fusion at 0.876 test accuracy (n=225), (1.05, 1.3) reached 0.933.
    intensity: tuple[float, float] = (1.05, 1.3)
    pose_jitter: float = 1.0  # multiplier on rotation/translation/scale jitter
    clutter: float = 1.0  # background clutter amount in both modalities
    lighting: float = 1.0  # multiplier on visible illumination gradients, white balance and exposure spread
    identity_spread: float = 1.0  # how different subjects look; < 1 pulls faces towards a typical one
    vis_noise: float = 0.03  # visible sensor noise std, fraction of full scale
    vis_bad_light_frac: float = 0.12  # low light, glare or a hard shadow on the visible image only
    occlusion_frac: float = 0.03  # hand/card/mask/sunglasses, seen by both cameras (card with parallax)
    ir_artifact_frac: float = 0.05  # hot object, defocus, stripe noise or calibration drift
    ir_resolution: float = 0.4  # effective thermal sensor resolution as a fraction of image_size
    ir_blur: float = 1.2  # gaussian sigma in output pixels
    ir_noise: float = 0.35  # sensor noise std in degrees C (face contrast is about 5 C)
    ir_cue_strength: float = 0.6  # multiplier on expression-linked thermal patterns
    ir_misalign: float = 1.0  # multiplier on the visible/infrared camera offset
    disjoint_failures: bool = True

    @classmethod
    def from_difficulty(cls, difficulty: str | Mapping[str, Any] | Knobs) -> Knobs:
        """``"default"``, ``"easy"``, a :class:`Knobs`, or a mapping overriding fields of the default."""
        if isinstance(difficulty, Knobs):
            knobs = difficulty
        elif isinstance(difficulty, str):
            if difficulty not in DIFFICULTIES:
                raise ValueError(
                    f"unknown difficulty {difficulty!r}; valid: {', '.join(DIFFICULTIES)} or a dict of knob overrides"
                )
            knobs = DIFFICULTIES[difficulty]
        elif isinstance(difficulty, Mapping):  # also Hydra's DictConfig
            valid = [f.name for f in fields(cls)]
            bad = [str(k) for k in difficulty if k not in valid]
            if bad:
                raise ValueError(
                    f"unknown difficulty knob(s) {', '.join(map(repr, bad))}; valid knobs: {', '.join(valid)}"
                )
            knobs = replace(cls(), **{k: _coerce_knob(k, v) for k, v in difficulty.items()})
        else:
            raise ValueError(
                f"difficulty must be 'default', 'easy' or a dict of knob overrides, got {type(difficulty).__name__}"
            )
        knobs.validate()
        return knobs

    def validate(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ValueError(f"difficulty knob {key!r} = {getattr(self, key)!r}: {what}")

        lo, hi = self.intensity
        need(0.0 < lo <= hi <= 1.5, "intensity", "need [lo, hi] with 0 < lo <= hi <= 1.5")
        for key in ("vis_bad_light_frac", "occlusion_frac", "ir_artifact_frac"):
            need(0.0 <= getattr(self, key) <= 1.0, key, "must be in [0, 1]")
        for key in (
            "pose_jitter",
            "clutter",
            "lighting",
            "vis_noise",
            "ir_blur",
            "ir_noise",
            "ir_cue_strength",
            "ir_misalign",
        ):
            need(getattr(self, key) >= 0.0, key, "must be >= 0")
        need(0.0 <= self.identity_spread <= 1.0, "identity_spread", "must be in [0, 1]")
        need(0.05 <= self.ir_resolution <= 1.0, "ir_resolution", "must be in [0.05, 1]")
        if self.disjoint_failures:
            need(
                self.vis_bad_light_frac + self.ir_artifact_frac <= 1.0,
                "ir_artifact_frac",
                "vis_bad_light_frac + ir_artifact_frac must be <= 1 when disjoint_failures is set",
            )


def _coerce_knob(key: str, value: Any) -> Any:
    try:
        if key == "intensity":
            lo, hi = (float(v) for v in value)
            return lo, hi
        if key == "disjoint_failures":
            if not isinstance(value, bool):
                raise TypeError
            return value
        return float(value)
    except (TypeError, ValueError):
        want = {"intensity": "a pair [lo, hi]", "disjoint_failures": "true or false"}.get(key, "a number")
        raise ValueError(f"difficulty knob {key!r} = {value!r}: must be {want}") from None


DIFFICULTIES: dict[str, Knobs] = {
    "default": Knobs(),
    # Expression is the main thing that varies: similar-looking people, plain backdrop, even light.
    "easy": Knobs(
        intensity=(1.0, 1.15),
        pose_jitter=0.1,
        clutter=0.0,
        lighting=0.1,
        identity_spread=0.1,
        vis_noise=0.01,
        vis_bad_light_frac=0.0,
        occlusion_frac=0.0,
        ir_artifact_frac=0.0,
        ir_resolution=1.0,
        ir_blur=0.5,
        ir_noise=0.05,
        ir_cue_strength=1.5,
        ir_misalign=0.5,
    ),
}


# ---------------------------------------------------------------------------------------------- subject

_HAIR_COLOURS = [(25, 20, 18), (55, 38, 27), (105, 70, 42), (190, 160, 105), (140, 65, 32), (150, 148, 145)]
_IRIS_COLOURS = [(70, 45, 25), (40, 28, 20), (70, 110, 150), (80, 110, 70)]
_HAIR_STYLES = ("short", "long", "curly", "bun", "bald")


@dataclass(frozen=True)
class Subject:
    """Identity: everything that stays fixed across one person's samples."""

    face_w: float  # face half-width in face units
    aspect: float  # half-height / half-width
    jaw: float  # 0 = round, 1 = narrow chin
    eye_y: float
    eye_dx: float
    eye_w: float
    brow_gap: float
    brow_th: float
    brow_arch: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip: float
    hairline: float  # fraction of face half-height above centre
    hair_style: str
    hair_volume: float
    hair_part: float
    skin: tuple[int, int, int]
    lips: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    clothes: tuple[int, int, int]
    glasses: tuple[int, int, int] | None
    beard: str | None  # None, "full" or "goatee"
    skin_temp: float  # degrees C
    light_side: int  # which side the nose casts its shadow

    @classmethod
    def sample(cls, rng: np.random.Generator, spread: float = 1.0) -> Subject:
        """A random person; ``spread`` < 1 pulls every attribute towards a typical face.

        Each attribute takes the same number of draws whatever ``spread`` is.
        """

        def u(lo: float, hi: float, size: int | None = None) -> Any:
            mid = (lo + hi) / 2
            return mid + spread * (rng.uniform(lo, hi, size) - mid)

        def pick(options: Any, p: list[float] | None = None) -> Any:
            """Weighted choice below ``spread``, else the first (typical) option."""
            c = rng.random()
            if c >= spread:
                return options[0]
            cum = np.cumsum(p if p is not None else np.full(len(options), 1 / len(options)))
            return options[min(int(np.searchsorted(cum, c / spread, side="right")), len(options) - 1)]

        tone = u(0.0, 1.0)
        light, dark = np.array([238, 200, 172]), np.array([92, 58, 40])
        skin = (light + tone * (dark - light)) * u(0.95, 1.05, 3)
        lips = skin * np.array([0.78, 0.5, 0.5]) + np.array([30, 0, 5])
        style = pick(_HAIR_STYLES, [0.35, 0.25, 0.15, 0.1, 0.15])
        hair = np.array(pick(_HAIR_COLOURS)) * u(0.85, 1.15)
        glasses_draw, beard_draw = rng.random(2) / max(spread, 1e-6)
        return cls(
            face_w=u(0.92, 1.06),
            aspect=u(1.22, 1.42),
            jaw=u(0.0, 1.0),
            eye_y=u(-0.14, -0.04),
            eye_dx=u(0.36, 0.44),
            eye_w=u(0.15, 0.19),
            brow_gap=u(0.17, 0.23),
            brow_th=u(0.055, 0.08),
            brow_arch=u(0.0, 0.04),
            nose_len=u(0.30, 0.40),
            nose_w=u(0.10, 0.14),
            mouth_y=u(0.58, 0.68),
            mouth_w=u(0.28, 0.36),
            lip=u(0.045, 0.07),
            hairline=u(0.48, 0.66),
            hair_style=style,
            hair_volume=u(1.0, 1.15),
            hair_part=u(-1.0, 1.0),
            skin=_rgb(skin),
            lips=_rgb(lips),
            hair=_rgb(hair),
            iris=pick(_IRIS_COLOURS),
            clothes=_rgb(u(20, 230, 3)),
            glasses=_rgb(rng.uniform(10, 120, 3)) if glasses_draw < 0.2 else None,
            beard=None if beard_draw > 0.2 else ("full" if beard_draw < 0.12 else "goatee"),
            skin_temp=u(33.6, 34.8),
            light_side=int(rng.choice([-1, 1])),
        )


def _rgb(c: Any) -> tuple[int, int, int]:
    r, g, b = np.clip(np.round(np.asarray(c, dtype=np.float64)), 0, 255).astype(int)
    return int(r), int(g), int(b)


# ---------------------------------------------------------------------------------------------- geometry

# Feature settings at full intensity; a sample interpolates from neutral by its intensity (extrapolates
# above 1). Offsets are in face units, y down, so negative = up.
_NEUTRAL_EXPR = dict(
    brow_in=0.0,
    brow_out=0.0,
    brow_arch=0.0,
    eye_open=1.0,
    lower_lid=1.0,
    gaze_y=0.0,
    mouth_curve=0.0,
    mouth_open=0.0,
    mouth_w=1.0,
    lip_scale=1.0,
    teeth=0.0,
    cheek=0.0,
    furrow=0.0,
    forehead=0.0,
    chin=0.0,
)
_EXPRESSIONS: dict[str, dict[str, float]] = {
    "Neutral": {},
    "Happy": dict(
        brow_in=-0.02,
        brow_out=-0.02,
        eye_open=0.72,
        lower_lid=0.5,
        mouth_curve=-0.17,
        mouth_open=0.08,
        mouth_w=1.22,
        lip_scale=0.85,
        teeth=1.0,
        cheek=1.0,
    ),
    "Sad": dict(
        brow_in=-0.15,
        brow_out=0.05,
        eye_open=0.75,
        gaze_y=0.03,
        mouth_curve=0.15,
        mouth_w=0.92,
        lip_scale=1.1,
        chin=1.0,
    ),
    "Angry": dict(
        brow_in=0.17, brow_out=-0.06, eye_open=0.5, mouth_curve=0.04, mouth_w=0.75, lip_scale=0.4, furrow=1.0
    ),
    "Surprise": dict(
        brow_in=-0.17,
        brow_out=-0.15,
        brow_arch=0.05,
        eye_open=1.55,
        mouth_open=0.3,
        mouth_w=0.62,
        lip_scale=0.9,
        forehead=1.0,
    ),
}

# Expression-linked thermal changes in degrees C at full intensity: (anchor, sigma, delta).
_THERMAL_CUES: dict[str, list[tuple[str, float, float]]] = {
    "Neutral": [],
    "Angry": [("forehead", 0.32, 1.1), ("nose_tip", 0.12, 1.3), ("periorbital", 0.16, 0.5)],
    "Happy": [("cheeks", 0.2, 1.1), ("nose_tip", 0.12, -0.4), ("mouth", 0.16, 0.3)],
    "Sad": [("periorbital", 0.16, 0.9), ("forehead", 0.32, -0.5), ("cheeks", 0.2, -0.4), ("chin", 0.15, 0.5)],
    "Surprise": [("nose_tip", 0.12, -1.4), ("forehead", 0.32, -0.6), ("periorbital", 0.16, 0.3)],
}


@dataclass(frozen=True)
class Layer:
    part: str  # key into a renderer's paint table
    points: np.ndarray  # (N, 2) face units
    width: float = 0.0  # 0: filled polygon, else polyline width in face units
    alpha: float = 1.0  # visible opacity multiplier (faint wrinkles)


@dataclass(frozen=True)
class Geometry:
    """Painter-ordered layers plus anchor points for thermal patterns."""

    expression: str
    layers: list[Layer]
    anchors: dict[str, list[tuple[float, float]]]
    half_w: float
    half_h: float


@dataclass(frozen=True)
class Pose:
    angle: float  # radians
    scale: float  # one face unit as a fraction of the image side
    cx: float  # face centre as a fraction of the image side
    cy: float

    def matrix(self, size: float) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.scale * size
        return np.array([[c * k, -s * k], [s * k, c * k]]), np.array([self.cx * size, self.cy * size])

    def to_pixels(self, pts: np.ndarray, size: float) -> list[float]:
        """Flat ``[x0, y0, x1, y1, ...]`` as Pillow's drawing calls take it."""
        a, t = self.matrix(size)
        return (np.asarray(pts) @ a.T + t).ravel().tolist()

    def face_grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Face coordinates of every pixel centre of a ``size`` x ``size`` canvas."""
        a, t = self.matrix(size)
        inv = np.linalg.inv(a)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        px, py = xx - t[0], yy - t[1]
        return inv[0, 0] * px + inv[0, 1] * py, inv[1, 0] * px + inv[1, 1] * py


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _closed(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([pts, pts[:1]])


def _curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([x, y], axis=1)


def build_geometry(subject: Subject, expression: str, intensity: float) -> Geometry:
    """Face layers for one subject making ``expression`` at ``intensity`` (0 = neutral, 1 = full)."""
    e = {k: v + intensity * (_EXPRESSIONS[expression].get(k, v) - v) for k, v in _NEUTRAL_EXPR.items()}
    sj = subject
    a, b = sj.face_w, sj.face_w * sj.aspect
    layers: list[Layer] = []
    add = layers.append
    n = 25
    t = np.linspace(-1.0, 1.0, n)
    bell = np.sqrt(1.0 - t**2)

    ey, ex, ew = sj.eye_y, sj.eye_dx, sj.eye_w
    tip_y = ey + sj.nose_len
    my = max(sj.mouth_y, tip_y + 0.2)
    brow_y = ey - sj.brow_gap

    # Hair behind the head, clothes, neck, ears, face.
    vol = sj.hair_volume
    if sj.hair_style in ("short", "bun"):
        back = _ellipse(0, -0.08 * b, a * 1.07 * vol, b * 1.0 * vol, 48)
        back[:, 1] = np.minimum(back[:, 1], ey + 0.05)
        add(Layer("hair_back", back))
        if sj.hair_style == "bun":
            add(Layer("hair_back", _ellipse(0, -b * 1.08, 0.3, 0.24)))
    elif sj.hair_style == "long":
        th = np.linspace(np.pi, 2 * np.pi, 24)
        top = np.stack([a * 1.12 * vol * np.cos(th), -0.05 * b + b * 1.04 * vol * np.sin(th)], axis=1)
        sides = np.array([[a * 1.18 * vol, 1.8 * b], [-a * 1.18 * vol, 1.8 * b]])
        add(Layer("hair_back", np.concatenate([top, sides])))
    elif sj.hair_style == "curly":
        th = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        r = 1.0 + 0.05 * np.sin(11 * th + 3 * sj.hair_part)
        back = np.stack([a * 1.25 * vol * r * np.cos(th), b * (1.08 * vol * r * np.sin(th) - 0.12)], axis=1)
        back[:, 1] = np.minimum(back[:, 1], 0.45 * b)
        add(Layer("hair_back", back))
    add(
        Layer(
            "clothes",
            np.array(
                [
                    [-0.9 * a, 1.05 * b],
                    [0.9 * a, 1.05 * b],
                    [2.6 * a, 1.5 * b],
                    [2.6 * a, 4 * b],
                    [-2.6 * a, 4 * b],
                    [-2.6 * a, 1.5 * b],
                ]
            ),
        )
    )
    add(
        Layer(
            "neck",
            np.array([[-0.5 * a, 0.3 * b], [0.5 * a, 0.3 * b], [0.55 * a, 1.2 * b], [-0.55 * a, 1.2 * b]]),
        )
    )
    if sj.hair_style != "long":
        for side in (-1, 1):
            add(Layer("ear", _ellipse(side * a * 0.97, ey + 0.14, 0.12, 0.21, 24)))
    th = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    narrow = 1.0 - sj.jaw * 0.22 * np.clip(np.sin(th), 0, None) ** 2
    face = np.stack([a * np.cos(th) * narrow, b * np.sin(th)], axis=1)
    add(Layer("face", face))

    # Expression wrinkles and blush, drawn under the features.
    if e["cheek"] > 0:
        for side in (-1, 1):
            add(Layer("cheek", _ellipse(side * 0.52, tip_y - 0.02, 0.17, 0.12, 24), alpha=e["cheek"]))
            c0 = np.array([side * (sj.nose_w + 0.06), tip_y - 0.03])
            c1 = np.array([side * (sj.mouth_w * e["mouth_w"] + 0.15), (tip_y + my) / 2])
            c2 = np.array([side * (sj.mouth_w * e["mouth_w"] + 0.06), my + e["mouth_curve"] * 0.4 + 0.05])
            s = np.linspace(0, 1, 10)[:, None]
            add(Layer("wrinkle", (1 - s) ** 2 * c0 + 2 * s * (1 - s) * c1 + s**2 * c2, 0.03, e["cheek"]))
    if e["furrow"] > 0:
        for side in (-1, 1):
            x = side * 0.055
            add(Layer("wrinkle", np.array([[x, brow_y - 0.05], [x * 0.8, brow_y + 0.1]]), 0.03, e["furrow"]))
    if e["forehead"] > 0:
        for i in range(3):
            y0 = brow_y - 0.14 - 0.08 * i
            xs = np.linspace(-0.38, 0.38, 9)
            add(Layer("wrinkle", _curve(xs, y0 + 0.1 * xs**2), 0.022, e["forehead"]))
    if e["chin"] > 0:  # sadness: chin raiser bump and short lines above the raised inner brows
        xs = np.linspace(-0.12, 0.12, 7)
        add(Layer("wrinkle", _curve(xs, my + 0.2 - 1.2 * xs**2), 0.025, e["chin"]))
        xs = np.linspace(-0.16, 0.16, 7)
        for i in range(2):
            add(Layer("wrinkle", _curve(xs, brow_y - 0.12 - 0.07 * i - 0.8 * xs**2), 0.022, e["chin"]))

    eh = ew * 0.5 * e["eye_open"]
    lower = ew * 0.28 * e["lower_lid"] * min(1.0, e["eye_open"])

    # Brows.
    s = np.linspace(0.0, 1.0, 12)
    for side in (-1, 1):
        x = side * (ex - ew * 0.95 + s * ew * 2.15)
        arch = (sj.brow_arch + e["brow_arch"]) * np.sin(np.pi * s)
        # An exaggerated frown may pull the brow down to the upper lid, not through it.
        y = np.minimum(brow_y + (1 - s) * e["brow_in"] + s * e["brow_out"] - arch, ey - eh - 0.01)
        half = sj.brow_th * (1.15 - 0.5 * s) / 2
        add(Layer("brow", np.concatenate([_curve(x, y - half), _curve(x, y + half)[::-1]])))

    # Eyes: almond from two lid curves; iris clamped between the lids.
    for side in (-1, 1):
        x = side * (ex + ew * t)
        y_up = ey - eh * (1 - t**2) ** 0.7
        y_lo = ey + lower * (1 - t**2) ** 0.9
        add(Layer("eye_white", np.concatenate([_curve(x, y_up), _curve(x, y_lo)[::-1]])))
        for part, r in (("iris", ew * 0.5), ("pupil", ew * 0.2)):
            c = _ellipse(side * ex, ey + e["gaze_y"] - 0.25 * eh + 0.25 * lower, r, r, 24)
            tc = np.clip((side * c[:, 0] - ex) / ew, -1, 1)
            top = ey - eh * (1 - tc**2) ** 0.7
            bot = ey + lower * (1 - tc**2) ** 0.9
            c[:, 1] = np.clip(c[:, 1], top, bot)
            add(Layer(part, c))
        add(Layer("lash", _curve(x, y_up), 0.035))
    anchors: dict[str, list[tuple[float, float]]] = {
        "inner_canthus": [(side * (ex - ew * 0.85), ey) for side in (-1, 1)],
        "periorbital": [(side * ex, ey) for side in (-1, 1)],
        "forehead": [(0.0, brow_y - 0.3)],
        "nose_tip": [(0.0, tip_y)],
        "nose_bridge": [(0.0, (ey + tip_y) / 2)],
        "cheeks": [(side * 0.52, tip_y - 0.02) for side in (-1, 1)],
        "mouth": [(0.0, my)],
        "chin": [(0.0, my + 0.3)],
    }

    # Nose.
    nw, ls = sj.nose_w, sj.light_side
    add(Layer("nose_line", np.array([[ls * nw * 0.35, ey + 0.1], [ls * nw * 0.5, tip_y - 0.05]]), 0.025))
    xs = np.linspace(-1, 1, 9)
    add(Layer("nose_line", _curve(nw * xs, tip_y + 0.03 - 0.05 * xs**2), 0.022))
    for side in (-1, 1):
        add(Layer("nostril", _ellipse(side * nw * 0.5, tip_y + 0.005, 0.04, 0.022, 16)))

    if sj.beard is not None:
        keep = face[:, 1] >= (my - 0.12 if sj.beard == "full" else my + 0.08)
        outline = face[keep]  # already ordered right -> chin -> left
        w = sj.mouth_w + 0.1
        mustache = np.array([[-w, my - 0.06], [-0.1, tip_y + 0.07], [0.1, tip_y + 0.07], [w, my - 0.06]])
        if sj.beard == "goatee":
            mustache = np.array([[-w * 0.7, my + 0.02], [w * 0.7, my + 0.02]])
        add(Layer("beard", np.concatenate([outline, mustache])))

    # Mouth: centre line bends with mouth_curve; the opening is elliptical.
    mw = sj.mouth_w * e["mouth_w"]
    x = mw * t
    yc = my + e["mouth_curve"] * t**2
    gap = e["mouth_open"] * bell
    in_top, in_bot = yc - 0.4 * gap, yc + 0.6 * gap
    lip_u = sj.lip * e["lip_scale"] * 0.8 * np.sqrt(bell) * (1 - 0.35 * np.exp(-((t / 0.18) ** 2)))
    lip_l = sj.lip * e["lip_scale"] * 1.1 * np.sqrt(bell)
    add(Layer("lips", np.concatenate([_curve(x, in_top - lip_u), _curve(x, in_bot + lip_l)[::-1]])))
    add(Layer("lip_line", _curve(x, yc), 0.025))
    if e["mouth_open"] > 0.012:
        add(Layer("mouth_inner", np.concatenate([_curve(x, in_top), _curve(x, in_bot)[::-1]])))
        if e["teeth"] > 0.5:
            teeth_bottom = _curve(x * 0.85, in_top + 0.55 * gap)
            add(Layer("teeth", np.concatenate([_curve(x * 0.85, in_top), teeth_bottom[::-1]])))

    # Hair over the forehead.
    if sj.hair_style != "bald":
        xs = np.linspace(-0.99, 0.99, 31) * a
        top = -b * 1.03 * np.sqrt(np.clip(1 - (xs / a) ** 2, 0, None))
        temple = ey - 0.12
        line = -sj.hairline * b + (temple + sj.hairline * b) * (xs / a) ** 2 + 0.1 * sj.hair_part * xs / a
        line = np.maximum(line, top)
        add(Layer("fringe", np.concatenate([_curve(xs, top), _curve(xs, line)[::-1]])))

    if sj.glasses is not None:
        for side in (-1, 1):
            th = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            c, s_ = np.cos(th), np.sin(th)
            rim = np.stack(
                [
                    side * ex + ew * 1.4 * np.sign(c) * np.abs(c) ** 0.5,
                    ey + 0.01 + 0.14 * np.sign(s_) * np.abs(s_) ** 0.5,
                ],
                axis=1,
            )
            add(Layer("glasses_lens", rim))
            add(Layer("glasses_frame", _closed(rim), 0.03))
            temple = np.array([[side * (ex + ew * 1.4), ey - 0.02], [side * a, ey + 0.02]])
            add(Layer("glasses_frame", temple, 0.03))
        inner = ex - ew * 1.4
        add(Layer("glasses_frame", np.array([[-inner, ey - 0.02], [inner, ey - 0.02]]), 0.03))
    return Geometry(expression, layers, anchors, a, b)


# ------------------------------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Scene:
    """Per-sample conditions shared by both renderers."""

    intensity: float
    pose: Pose  # visible camera
    ir_pose: Pose
    bad_light: str | None  # "dark", "glare" or "shadow"
    occluder: list[Layer]
    occluder_kind: str | None
    parallax: float  # extra x shift of the occluder in the thermal camera, face units
    ir_artifact: str | None  # "hot_object", "defocus", "stripes" or "drift"
    ambient: float  # room temperature, degrees C


# The thermal camera sits beside the visible one with a slightly wider field of view.
_RIG_SHIFT = (0.035, -0.02)
_RIG_SCALE = 0.94


def sample_scene(rng: np.random.Generator, subject: Subject, knobs: Knobs) -> Scene:
    pj = knobs.pose_jitter
    lo, hi = knobs.intensity
    pose = Pose(
        angle=math.radians(float(np.clip(rng.normal(0, 6), -15, 15)) * pj),
        scale=0.36 * (1 + rng.uniform(-0.08, 0.08) * pj) / subject.face_w**0.5,
        cx=0.5 + rng.uniform(-0.05, 0.05) * pj,
        cy=0.5 + rng.uniform(-0.04, 0.04) * pj,
    )
    m = knobs.ir_misalign
    ir_pose = Pose(
        angle=pose.angle + math.radians(rng.normal(0, 1.0)) * m,
        scale=pose.scale * _RIG_SCALE**m,
        cx=0.5 + (pose.cx - 0.5) * _RIG_SCALE**m + (_RIG_SHIFT[0] + rng.normal(0, 0.008)) * m,
        cy=0.5 + (pose.cy - 0.5) * _RIG_SCALE**m + (_RIG_SHIFT[1] + rng.normal(0, 0.008)) * m,
    )

    # Every draw happens whatever the knobs, so changing one fraction only flips that condition on or off
    # and leaves the rest of the sample as it was.
    u_vis, u_ir, u_occ = rng.random(3)
    light_kind = str(rng.choice(["dark", "glare", "shadow"], p=[0.6, 0.2, 0.2]))
    artifact_kind = str(rng.choice(["hot_object", "defocus", "stripes", "drift"]))
    occ_kind = str(rng.choice(["hand", "card", "mask", "sunglasses"]))
    occ_rng = np.random.default_rng(rng.integers(2**62))
    intensity = float(rng.uniform(lo, hi))
    ambient = float(rng.uniform(19.0, 25.0))
    if knobs.disjoint_failures:
        u_ir = 1.0 - u_vis  # bad light takes the low end of u_vis, artifacts the high end
    occluder, parallax = _occluder(occ_rng, subject, occ_kind) if u_occ < knobs.occlusion_frac else ([], 0.0)
    return Scene(
        intensity=intensity,
        pose=pose,
        ir_pose=ir_pose,
        bad_light=light_kind if u_vis < knobs.vis_bad_light_frac else None,
        occluder=occluder,
        occluder_kind=occ_kind if occluder else None,
        parallax=parallax,
        ir_artifact=artifact_kind if u_ir < knobs.ir_artifact_frac else None,
        ambient=ambient,
    )


def _occluder(rng: np.random.Generator, sj: Subject, kind: str) -> tuple[list[Layer], float]:
    a, b = sj.face_w, sj.face_w * sj.aspect
    mouth = np.array([0.0, max(sj.mouth_y, sj.eye_y + sj.nose_len + 0.2)])
    if kind == "sunglasses":
        layers = [
            Layer("occluder", _ellipse(side * sj.eye_dx, sj.eye_y + 0.01, sj.eye_w * 1.5, 0.15, 24)) for side in (-1, 1)
        ]
        layers.append(Layer("occluder", np.array([[-sj.eye_dx, sj.eye_y], [sj.eye_dx, sj.eye_y]]), 0.05))
        return layers, 0.0
    if kind == "mask":
        top = sj.eye_y + sj.nose_len * rng.uniform(0.45, 0.8)
        xs = np.linspace(-0.95, 0.95, 15) * a
        upper = top + 0.08 * (xs / a) ** 2
        lower = b * 0.98 - 0.35 * (xs / a) ** 2
        return [Layer("occluder", np.concatenate([_curve(xs, upper), _curve(xs, lower)[::-1]]))], 0.0
    target = mouth if rng.random() < 0.65 else np.array([rng.choice([-1, 1]) * sj.eye_dx, sj.eye_y])
    target = target + rng.normal(0, 0.06, 2)
    angle = rng.uniform(-0.6, 0.6)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if kind == "card":
        w, h = rng.uniform(0.35, 0.55), rng.uniform(0.22, 0.35)
        rect = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) @ rot.T + target
        return [Layer("occluder", rect)], float(rng.uniform(0.25, 0.45))
    # A hand reaching up from below: palm under the target, fingers across it.
    palm = _ellipse(0, 0.42, 0.3, 0.26, 24)
    fingers = [
        np.array([[dx, 0.3], [dx * 1.2, -0.12 - 0.06 * (1 - abs(dx) / 0.2)]]) for dx in (-0.18, -0.06, 0.06, 0.18)
    ]
    layers = [Layer("occluder", palm @ rot.T + target)]
    layers += [Layer("occluder", f @ rot.T + target, 0.11) for f in fingers]
    return layers, 0.0


# --------------------------------------------------------------------------------------------- rendering


def _paint(
    draw: ImageDraw.ImageDraw,
    layers: list[Layer],
    pose: Pose,
    size: int,
    paint: dict[str, Any],
    offset: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Draw ``layers`` with ``paint[part]`` (RGBA tuple, float or int); parts without a value are skipped."""
    unit = pose.scale * size
    for layer in layers:
        value = paint.get(layer.part)
        if value is None:
            continue
        if isinstance(value, tuple) and len(value) == 4 and layer.alpha < 1.0:
            value = (*value[:3], round(value[3] * layer.alpha))
        pts = pose.to_pixels(layer.points + np.asarray(offset), size)
        if layer.width > 0:
            draw.line(pts, fill=value, width=max(1, round(layer.width * unit)), joint="curve")
        else:
            draw.polygon(pts, fill=value)


def _supersample(image_size: int) -> int:
    return int(np.clip(math.ceil(200 / image_size), 2, 4))


def _shade(c: tuple[int, int, int], k: float, alpha: int = 255) -> tuple[int, int, int, int]:
    return (*_rgb(np.asarray(c) * k), alpha)


def _mix(c1: tuple[int, int, int], c2: tuple[int, int, int], w: float) -> tuple[int, int, int]:
    return _rgb(np.asarray(c1) * (1 - w) + np.asarray(c2) * w)


def render_visible(
    rng: np.random.Generator, subject: Subject, geom: Geometry, scene: Scene, image_size: int, knobs: Knobs
) -> np.ndarray:
    ss = _supersample(image_size)
    size = image_size * ss
    sj = subject

    # Background at output resolution (it is out of focus anyway): gradient plus blurred clutter.
    n = image_size
    gx, gy = np.mgrid[0:n, 0:n] / n - 0.5
    d = rng.uniform(0, 2 * np.pi)
    g = np.clip(0.5 + np.cos(d) * gx + np.sin(d) * gy, 0, 1)[..., None]
    c0, c1 = 125 + min(knobs.clutter, 1.0) * (rng.uniform(30, 220, (2, 3)) - 125)  # plain backdrop at 0
    bg = Image.fromarray((c0 + g * (c1 - c0)).astype(np.uint8))
    draw = ImageDraw.Draw(bg, "RGBA")
    for _ in range(rng.poisson(6 * knobs.clutter)):
        col = (*_rgb(rng.uniform(0, 255, 3)), int(rng.uniform(60, 170)))
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * n
        w, h = rng.uniform(0.08, 0.6, 2) * n
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
        elif shape == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
        else:
            draw.line([(x0, y0), (x0 + w, y0 + h)], fill=col, width=int(rng.uniform(0.01, 0.04) * n) + 1)
    bg = bg.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0) * n / 80))
    img = bg.resize((size, size), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img, "RGBA")

    skin = sj.skin
    brow = _mix(sj.hair, (20, 15, 10), 0.6)
    paint: dict[str, Any] = {
        "hair_back": _shade(sj.hair, 0.8),
        "clothes": _shade(sj.clothes, 1.0),
        "neck": _shade(skin, 0.82),
        "ear": _shade(skin, 0.9),
        "face": _shade(skin, 1.0),
        "cheek": (*_mix(skin, (230, 90, 90), 0.5), 70),
        "wrinkle": _shade(skin, 0.55, 230),
        "brow": (*brow, 255),
        "eye_white": (236, 232, 226, 255),
        "iris": (*sj.iris, 255),
        "pupil": (12, 8, 8, 255),
        "lash": (30, 20, 18, 255),
        "nose_line": _shade(skin, 0.76, 200),
        "nostril": _shade(skin, 0.42),
        "beard": (*sj.hair, 170),
        "lips": (*sj.lips, 255),
        "lip_line": _shade(sj.lips, 0.45),
        "mouth_inner": (55, 12, 18, 255),
        "teeth": (242, 238, 225, 255),
        "fringe": (*sj.hair, 255),
        "glasses_lens": (190, 215, 230, 45),
        "glasses_frame": (*sj.glasses, 255) if sj.glasses else None,
    }
    _paint(draw, geom.layers, scene.pose, size, paint)
    object_colour = (*_rgb(rng.uniform(20, 235, 3)), 255)
    colour = {"hand": _shade(skin, 0.95), "sunglasses": (15, 15, 20, 255)}.get(scene.occluder_kind or "", object_colour)
    _paint(draw, scene.occluder, scene.pose, size, {"occluder": colour})
    out = np.asarray(img.resize((n, n), Image.Resampling.LANCZOS), dtype=np.float64)

    # Lighting is smooth, so it is applied after downsampling: rounded-face shading, a directional light
    # across the face, an illumination gradient over the frame and a white balance error.
    u, v = scene.pose.face_grid(n)
    r = np.sqrt((u / geom.half_w) ** 2 + (v / geom.half_h) ** 2)
    head = np.clip((1.1 - r) / 0.15, 0, 1)
    lv = knobs.lighting
    lx, ly = rng.normal(0, 0.5) * lv, rng.normal(-0.3, 0.3) * lv
    light = 1 + head * (-0.3 * np.clip(r, 0, 1) ** 4 + 0.12 * (lx * u + ly * v))
    d = rng.uniform(0, 2 * np.pi)
    light = light * (1 + rng.uniform(0, 0.5) * lv * (np.cos(d) * gx + np.sin(d) * gy))
    light = light[..., None] * (1 + rng.uniform(-0.1, 0.1, 3) * lv)
    gain = 1 + rng.uniform(-0.2, 0.15) * lv
    noise = knobs.vis_noise
    if scene.bad_light == "dark":
        gain = rng.uniform(0.08, 0.2)
        noise = noise + rng.uniform(0.04, 0.07)  # the camera's gain amplifies sensor noise
    elif scene.bad_light == "glare":
        gain = rng.uniform(2.0, 3.2)
        fx, fy = rng.uniform(-0.2, 0.2, 2)
        light = light + 1.5 * np.exp(-((gx - fx) ** 2 + (gy - fy) ** 2) / 0.05)[..., None]
    elif scene.bad_light == "shadow":
        d = rng.uniform(0, 2 * np.pi)
        side = np.cos(d) * gx + np.sin(d) * gy - rng.uniform(-0.1, 0.1)
        light = light * (1 - 0.85 * np.clip(side * 20 + 0.5, 0, 1))[..., None]
    out = np.clip(out * light * gain, 0, 255) + rng.normal(0, noise * 255, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable blur of a square array as two matrix products, edges reflected."""
    n = x.shape[0]
    if sigma <= 0.05:
        return x
    i = np.arange(n)
    radius = math.ceil(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    w /= w.sum()
    cols = i[:, None] + offsets[None, :]
    cols = np.abs(cols)
    cols = np.where(cols > n - 1, 2 * (n - 1) - cols, cols)
    k = np.zeros((n, n))
    np.add.at(k, (np.repeat(i, len(offsets)), np.clip(cols, 0, n - 1).ravel()), np.tile(w, n))
    return k @ x @ k.T


def render_thermal(
    rng: np.random.Generator,
    subject: Subject,
    geom: Geometry,
    scene: Scene,
    image_size: int,
    knobs: Knobs,
    palette: str,
) -> np.ndarray:
    lut = _palette(palette)
    # Drawn at twice the sensor's resolution, which the sensor then averages down.
    n_eff = max(8, round(image_size * knobs.ir_resolution))
    size = 2 * n_eff
    amb, base, pose = scene.ambient, subject.skin_temp, scene.ir_pose

    # Background: room temperature with a gradient and a few warm/cold objects.
    gx, gy = np.mgrid[0:size, 0:size] / size - 0.5
    d = rng.uniform(0, 2 * np.pi)
    bg = amb + rng.uniform(0, 2.0) * (np.cos(d) * gx + np.sin(d) * gy)
    temp = Image.fromarray(bg.astype(np.float32), "F")
    draw = ImageDraw.Draw(temp)
    for _ in range(rng.poisson(3 * knobs.clutter)):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.08, 0.5, 2) * size
        box = [x0, y0, x0 + w, y0 + h]
        t_obj = amb + rng.uniform(-3, 5)
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=float(t_obj))
    if scene.ir_artifact == "hot_object":
        cx, cy = rng.choice([0.1, 0.9]), rng.uniform(0.15, 0.85)
        rad = rng.uniform(0.1, 0.17) * size
        draw.ellipse(
            [cx * size - rad, cy * size - rad, cx * size + rad, cy * size + rad],
            fill=float(amb + rng.uniform(25, 50)),
        )

    hair = amb + (base - amb) * 0.45
    eye = base + 0.6
    paint: dict[str, Any] = {
        "hair_back": hair,
        "clothes": amb + 5.0,
        "neck": base - 0.4,
        "ear": base - 2.0,
        "face": base,
        "brow": base - 0.9,
        "eye_white": eye,
        "iris": eye,
        "pupil": eye,
        "nostril": base - 0.3,
        "beard": amb + (base - amb) * 0.7,
        "lips": base + 0.4,
        "lip_line": base + 0.6,
        "mouth_inner": base + 2.0,
        "teeth": base + 0.6,
        "fringe": amb + (base - amb) * 0.6,
        "glasses_lens": amb + 2.5,
        "glasses_frame": amb + 4.0,
    }
    _paint(draw, geom.layers, pose, size, {k: float(v) for k, v in paint.items()})

    # Heat patterns are painted only where bare skin is visible (not through hair or glasses).
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    skin_parts = (
        "face",
        "neck",
        "ear",
        "lips",
        "lip_line",
        "mouth_inner",
        "teeth",
        "eye_white",
        "iris",
        "pupil",
    )
    _paint(mdraw, geom.layers, pose, size, {p: 0 for p in paint} | {p: 255 for p in skin_parts})
    occ_temp = {"hand": base - 1.5, "sunglasses": amb + 2.0, "mask": amb + 6.0}.get(
        scene.occluder_kind or "", amb + rng.uniform(0, 6)
    )
    offset = (scene.parallax, 0.0)
    _paint(draw, scene.occluder, pose, size, {"occluder": float(occ_temp)}, offset)
    _paint(mdraw, scene.occluder, pose, size, {"occluder": 0}, offset)

    u, v = pose.face_grid(size)
    r2 = (u / geom.half_w) ** 2 + (v / geom.half_h) ** 2
    heat = -1.3 * np.clip(r2, 0, 1) ** 2  # the face cools towards its edge
    base_cues = [
        ("inner_canthus", 0.07, 1.6),
        ("periorbital", 0.16, 0.5),
        ("nose_tip", 0.11, -1.6),
        ("nose_bridge", 0.08, -0.5),
        ("cheeks", 0.2, -0.3),
        ("forehead", 0.3, 0.3),
        ("mouth", 0.15, 0.5),
    ]
    k = scene.intensity * knobs.ir_cue_strength
    cues = base_cues + [(name, sig, dt * k) for name, sig, dt in _THERMAL_CUES[geom.expression]]
    for name, sig, dt in cues:
        for x0, y0 in geom.anchors[name]:
            heat = heat + dt * np.exp(-((u - x0) ** 2 + (v - y0) ** 2) / (2 * sig**2))
    t_field = np.asarray(temp, dtype=np.float64) + heat * (np.asarray(mask, dtype=np.float64) / 255.0)

    # Sensor: low resolution, noise, optics blur.
    low = Image.fromarray(t_field.astype(np.float32), "F").resize((n_eff, n_eff), Image.Resampling.BOX)
    low_a = np.asarray(low, dtype=np.float64)
    noise, blur = knobs.ir_noise, knobs.ir_blur
    if scene.ir_artifact == "stripes":
        noise = noise * 4 + 0.3
        low_a = low_a + rng.normal(0, 1.0, (1, n_eff))
    elif scene.ir_artifact == "drift":
        d = rng.uniform(0, 2 * np.pi)
        ly, lx = np.mgrid[0:n_eff, 0:n_eff] / n_eff - 0.5
        low_a = low_a + rng.uniform(6, 10) * (np.cos(d) * lx + np.sin(d) * ly) - 5 * (lx**2 + ly**2)
    elif scene.ir_artifact == "defocus":
        blur = blur + rng.uniform(2.5, 3.5) * image_size / 80
    low_a = low_a + rng.normal(0, noise, low_a.shape)
    full = Image.fromarray(low_a.astype(np.float32), "F").resize((image_size, image_size), Image.Resampling.BILINEAR)
    t_img = _gaussian_blur(np.asarray(full, dtype=np.float64), blur * image_size / 80)

    # Auto-range like a FLIR camera: map the scene's span onto the palette.
    lo, hi = np.percentile(t_img, [0.5, 99.5])
    idx = np.clip(np.round((t_img - lo) / max(hi - lo, 1e-3) * 255), 0, 255).astype(np.intp)
    return lut[idx]


# -------------------------------------------------------------------------------------------------- API


def _palette(name: str) -> np.ndarray:
    if name not in PALETTES:
        raise ValueError(f"unknown palette {name!r}; valid: {', '.join(PALETTES)}")
    return PALETTES[name]


def _check_expression(expression: str) -> None:
    if expression not in CLASSES:
        raise ValueError(f"unknown expression {expression!r}; valid: {', '.join(CLASSES)}")


def render_pair(
    rng: np.random.Generator, subject: Subject, expression: str, image_size: int, palette: str, knobs: Knobs
) -> tuple[np.ndarray, np.ndarray]:
    """One (visible, infrared) pair, each ``(image_size, image_size, 3)`` uint8."""
    visible, infrared, _ = render_sample(rng, subject, expression, image_size, palette, knobs)
    return visible, infrared


def render_sample(
    rng: np.random.Generator, subject: Subject, expression: str, image_size: int, palette: str, knobs: Knobs
) -> tuple[np.ndarray, np.ndarray, Scene]:
    """:func:`render_pair` plus the scene it drew (intensity, failures), for ``conditions.csv``."""
    _check_expression(expression)
    _palette(palette)
    # Separate streams, so a knob that only affects one modality leaves the other one's pixels unchanged.
    scene_rng, vis_rng, ir_rng = (np.random.default_rng(s) for s in rng.integers(2**62, size=3))
    scene = sample_scene(scene_rng, subject, knobs)
    geom = build_geometry(subject, expression, scene.intensity)
    visible = render_visible(vis_rng, subject, geom, scene, image_size, knobs)
    infrared = render_thermal(ir_rng, subject, geom, scene, image_size, knobs, palette)
    return visible, infrared, scene


def _write_png(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def generate(
    out_dir: str | Path,
    *,
    n_subjects: int = 30,
    samples_per_class: int = 5,
    image_size: int = 80,
    seed: int = 0,
    palette: str = "iron",
    difficulty: str | Mapping[str, Any] = "default",
) -> list[dict]:
    """Write ``out_dir/{visible,infrared}/<Class>/<sample_id>.png`` and return one row per sample.

    Rows have ``sample_id`` (``s007_Happy_03``), ``label`` (class name), ``visible`` and ``infrared``
    (posix paths relative to ``out_dir``) and ``subject`` (``s007``, 0-based). ``samples_per_class`` is
    per subject. ``conditions.csv`` records each sample's expression intensity and which failure, if any,
    it drew (``visible_condition``: dark / glare / shadow; ``occluder``; ``infrared_condition``: hot_object /
    defocus / stripes / drift). Every sample draws from its own generator seeded by (seed, subject, class, index), so
    output is byte-identical for the same arguments and independent of generation order.
    """
    n_subjects = _positive_int("n_subjects", n_subjects)
    samples_per_class = _positive_int("samples_per_class", samples_per_class)
    image_size = _positive_int("image_size", image_size, 16)
    seed = _positive_int("seed", seed, 0)
    _palette(palette)
    knobs = Knobs.from_difficulty(difficulty)

    out = Path(out_dir)
    for modality in ("visible", "infrared"):
        for cls in CLASSES:
            (out / modality / cls).mkdir(parents=True, exist_ok=True)
    sw, kw = max(3, len(str(n_subjects - 1))), max(2, len(str(samples_per_class - 1)))
    rows, conditions = [], []
    for s in range(n_subjects):
        subject_rng = np.random.default_rng(np.random.SeedSequence([seed, 0, s]))
        subject = Subject.sample(subject_rng, knobs.identity_spread)
        subject_id = f"s{s:0{sw}d}"
        for c, cls in enumerate(CLASSES):
            for k in range(samples_per_class):
                rng = np.random.default_rng(np.random.SeedSequence([seed, 1, s, c, k]))
                visible, infrared, scene = render_sample(rng, subject, cls, image_size, palette, knobs)
                sample_id = f"{subject_id}_{cls}_{k:0{kw}d}"
                row = {
                    "sample_id": sample_id,
                    "label": cls,
                    "visible": f"visible/{cls}/{sample_id}.png",
                    "infrared": f"infrared/{cls}/{sample_id}.png",
                    "subject": subject_id,
                }
                _write_png(out / row["visible"], visible)
                _write_png(out / row["infrared"], infrared)
                rows.append(row)
                conditions.append(
                    {
                        "sample_id": sample_id,
                        "intensity": f"{scene.intensity:.3f}",
                        "visible_condition": scene.bad_light or "",
                        "occluder": scene.occluder_kind or "",
                        "infrared_condition": scene.ir_artifact or "",
                    }
                )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(conditions[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(conditions)
    (out / CONDITIONS).write_text(buf.getvalue())
    return rows
