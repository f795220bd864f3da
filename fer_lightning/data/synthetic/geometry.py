"""Face geometry for one subject and expression, and how layers are drawn through a camera pose.

Face geometry lives in "face units": origin at the face centre, x to the right, y down, face half-width
about 1. A :class:`Pose` maps face units to pixels of one camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ImageDraw

from fer_lightning.data.synthetic.subject import Subject

CLASSES: tuple[str, ...] = ("Angry", "Happy", "Neutral", "Sad", "Surprise")

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


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    """``n`` points ``(x, y)`` around the axis-aligned ellipse centred at ``(cx, cy)`` with radii ``rx``, ``ry``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def closed(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([pts, pts[:1]])


def curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
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
        back = ellipse(0, -0.08 * b, a * 1.07 * vol, b * 1.0 * vol, 48)
        back[:, 1] = np.minimum(back[:, 1], ey + 0.05)
        add(Layer("hair_back", back))
        if sj.hair_style == "bun":
            add(Layer("hair_back", ellipse(0, -b * 1.08, 0.3, 0.24)))
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
            add(Layer("ear", ellipse(side * a * 0.97, ey + 0.14, 0.12, 0.21, 24)))
    th = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    narrow = 1.0 - sj.jaw * 0.22 * np.clip(np.sin(th), 0, None) ** 2
    face = np.stack([a * np.cos(th) * narrow, b * np.sin(th)], axis=1)
    add(Layer("face", face))

    # Expression wrinkles and blush, drawn under the features.
    if e["cheek"] > 0:
        for side in (-1, 1):
            add(Layer("cheek", ellipse(side * 0.52, tip_y - 0.02, 0.17, 0.12, 24), alpha=e["cheek"]))
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
            add(Layer("wrinkle", curve(xs, y0 + 0.1 * xs**2), 0.022, e["forehead"]))
    if e["chin"] > 0:  # sadness: chin raiser bump and short lines above the raised inner brows
        xs = np.linspace(-0.12, 0.12, 7)
        add(Layer("wrinkle", curve(xs, my + 0.2 - 1.2 * xs**2), 0.025, e["chin"]))
        xs = np.linspace(-0.16, 0.16, 7)
        for i in range(2):
            add(Layer("wrinkle", curve(xs, brow_y - 0.12 - 0.07 * i - 0.8 * xs**2), 0.022, e["chin"]))

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
        add(Layer("brow", np.concatenate([curve(x, y - half), curve(x, y + half)[::-1]])))

    # Eyes: almond from two lid curves; iris clamped between the lids.
    for side in (-1, 1):
        x = side * (ex + ew * t)
        y_up = ey - eh * (1 - t**2) ** 0.7
        y_lo = ey + lower * (1 - t**2) ** 0.9
        add(Layer("eye_white", np.concatenate([curve(x, y_up), curve(x, y_lo)[::-1]])))
        for part, r in (("iris", ew * 0.5), ("pupil", ew * 0.2)):
            c = ellipse(side * ex, ey + e["gaze_y"] - 0.25 * eh + 0.25 * lower, r, r, 24)
            tc = np.clip((side * c[:, 0] - ex) / ew, -1, 1)
            top = ey - eh * (1 - tc**2) ** 0.7
            bot = ey + lower * (1 - tc**2) ** 0.9
            c[:, 1] = np.clip(c[:, 1], top, bot)
            add(Layer(part, c))
        add(Layer("lash", curve(x, y_up), 0.035))
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
    add(Layer("nose_line", curve(nw * xs, tip_y + 0.03 - 0.05 * xs**2), 0.022))
    for side in (-1, 1):
        add(Layer("nostril", ellipse(side * nw * 0.5, tip_y + 0.005, 0.04, 0.022, 16)))

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
    add(Layer("lips", np.concatenate([curve(x, in_top - lip_u), curve(x, in_bot + lip_l)[::-1]])))
    add(Layer("lip_line", curve(x, yc), 0.025))
    if e["mouth_open"] > 0.012:
        add(Layer("mouth_inner", np.concatenate([curve(x, in_top), curve(x, in_bot)[::-1]])))
        if e["teeth"] > 0.5:
            teeth_bottom = curve(x * 0.85, in_top + 0.55 * gap)
            add(Layer("teeth", np.concatenate([curve(x * 0.85, in_top), teeth_bottom[::-1]])))

    # Hair over the forehead.
    if sj.hair_style != "bald":
        xs = np.linspace(-0.99, 0.99, 31) * a
        top = -b * 1.03 * np.sqrt(np.clip(1 - (xs / a) ** 2, 0, None))
        temple = ey - 0.12
        line = -sj.hairline * b + (temple + sj.hairline * b) * (xs / a) ** 2 + 0.1 * sj.hair_part * xs / a
        line = np.maximum(line, top)
        add(Layer("fringe", np.concatenate([curve(xs, top), curve(xs, line)[::-1]])))

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
            add(Layer("glasses_frame", closed(rim), 0.03))
            temple = np.array([[side * (ex + ew * 1.4), ey - 0.02], [side * a, ey + 0.02]])
            add(Layer("glasses_frame", temple, 0.03))
        inner = ex - ew * 1.4
        add(Layer("glasses_frame", np.array([[-inner, ey - 0.02], [inner, ey - 0.02]]), 0.03))
    return Geometry(expression, layers, anchors, a, b)


def paint_layers(
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
