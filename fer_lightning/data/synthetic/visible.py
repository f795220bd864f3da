"""The visible camera: an RGB photo with clutter, lighting, white balance and sensor noise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fer_lightning.data.synthetic.geometry import Geometry, paint_layers
from fer_lightning.data.synthetic.knobs import Knobs
from fer_lightning.data.synthetic.scene import Scene
from fer_lightning.data.synthetic.subject import Subject, rgb


def _supersample(image_size: int) -> int:
    return int(np.clip(math.ceil(200 / image_size), 2, 4))


def _shade(c: tuple[int, int, int], k: float, alpha: int = 255) -> tuple[int, int, int, int]:
    return (*rgb(np.asarray(c) * k), alpha)


def _mix(c1: tuple[int, int, int], c2: tuple[int, int, int], w: float) -> tuple[int, int, int]:
    return rgb(np.asarray(c1) * (1 - w) + np.asarray(c2) * w)


def render_visible(
    rng: np.random.Generator, subject: Subject, geom: Geometry, scene: Scene, image_size: int, knobs: Knobs
) -> np.ndarray:
    """The visible image of ``scene``, ``(image_size, image_size, 3)`` uint8: cluttered background, then the face
    and any occluder drawn supersampled, then lighting, bad light and sensor noise as ``knobs`` set them."""
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
        col = (*rgb(rng.uniform(0, 255, 3)), int(rng.uniform(60, 170)))
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
    paint_layers(draw, geom.layers, scene.pose, size, paint)
    object_colour = (*rgb(rng.uniform(20, 235, 3)), 255)
    colour = {"hand": _shade(skin, 0.95), "sunglasses": (15, 15, 20, 255)}.get(scene.occluder_kind or "", object_colour)
    paint_layers(draw, scene.occluder, scene.pose, size, {"occluder": colour})
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
