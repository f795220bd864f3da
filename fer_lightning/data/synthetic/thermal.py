"""The thermal camera: a temperature field with expression-linked heat patterns, seen through a low-resolution
sensor and shown in a FLIR-style false-colour palette."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fer_lightning.data.synthetic.geometry import Geometry, paint_layers
from fer_lightning.data.synthetic.knobs import Knobs
from fer_lightning.data.synthetic.scene import Scene
from fer_lightning.data.synthetic.subject import Subject


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


def palette_lut(name: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 colour table of palette ``name``; ValueError naming the valid ones otherwise."""
    if name not in PALETTES:
        raise ValueError(f"unknown palette {name!r}; valid: {', '.join(PALETTES)}")
    return PALETTES[name]


# Expression-linked thermal changes in degrees C at full intensity: (anchor, sigma, delta).
_THERMAL_CUES: dict[str, list[tuple[str, float, float]]] = {
    "Neutral": [],
    "Angry": [("forehead", 0.32, 1.1), ("nose_tip", 0.12, 1.3), ("periorbital", 0.16, 0.5)],
    "Happy": [("cheeks", 0.2, 1.1), ("nose_tip", 0.12, -0.4), ("mouth", 0.16, 0.3)],
    "Sad": [("periorbital", 0.16, 0.9), ("forehead", 0.32, -0.5), ("cheeks", 0.2, -0.4), ("chin", 0.15, 0.5)],
    "Surprise": [("nose_tip", 0.12, -1.4), ("forehead", 0.32, -0.6), ("periorbital", 0.16, 0.3)],
}


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


def _draw_distractors(draw: ImageDraw.ImageDraw, scene: Scene, size: int) -> None:
    """Warm objects behind the person: a finned radiator, a mug with its handle, a lamp's bulb."""
    for kind, x0, y0, x1, y1, warmth in scene.distractors:
        box = [x0 * size, y0 * size, x1 * size, y1 * size]
        hot = float(scene.ambient + warmth)
        if kind == "radiator":
            draw.rectangle(box, fill=hot - 3.0)
            fins = max(3, round((x1 - x0) * 40))
            step = (box[2] - box[0]) / fins
            for i in range(fins):
                draw.rectangle([box[0] + i * step, box[1], box[0] + (i + 0.6) * step, box[3]], fill=hot)
        elif kind == "mug":
            w = box[2] - box[0]
            draw.ellipse([box[2] - 0.2 * w, box[1] + 0.2 * w, box[2] + 0.35 * w, box[3] - 0.2 * w], fill=hot - 8.0)
            draw.rectangle(box, fill=hot)
        else:
            draw.ellipse(box, fill=hot)


def render_thermal(
    rng: np.random.Generator,
    subject: Subject,
    geom: Geometry,
    scene: Scene,
    image_size: int,
    knobs: Knobs,
    palette: str,
) -> np.ndarray:
    """The infrared image of ``scene``, ``(image_size, image_size, 3)`` uint8: a temperature field drawn from
    the subject's skin temperature and ``geom``, through the sensor's resolution, noise and failures in
    ``knobs``, mapped to colours by ``palette``."""
    lut = palette_lut(palette)
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

    _draw_distractors(draw, scene, size)
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
    paint_layers(draw, geom.layers, pose, size, {k: float(v) for k, v in paint.items()})

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
    paint_layers(mdraw, geom.layers, pose, size, {p: 0 for p in paint} | {p: 255 for p in skin_parts})
    occ_temp = {"hand": base - 1.5, "sunglasses": amb + 2.0, "mask": amb + 6.0}.get(
        scene.occluder_kind or "", amb + rng.uniform(0, 6)
    )
    offset = (scene.parallax, 0.0)
    paint_layers(draw, scene.occluder, pose, size, {"occluder": float(occ_temp)}, offset)
    paint_layers(mdraw, scene.occluder, pose, size, {"occluder": 0}, offset)

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
    k = scene.intensity * knobs.ir_cue_strength * knobs.ir_expression
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
