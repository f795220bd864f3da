"""Per-sample conditions shared by both cameras: pose, expression intensity, failures and occluders."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fer_lightning.data.synthetic.geometry import Layer, Pose, curve, ellipse
from fer_lightning.data.synthetic.knobs import Knobs
from fer_lightning.data.synthetic.subject import Subject


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
    # warm objects in the thermal image: (kind, x0, y0, x1, y1 as fractions of the side, degrees above ambient)
    distractors: tuple[tuple[str, float, float, float, float, float], ...] = ()


# The thermal camera sits beside the visible one with a slightly wider field of view.
_RIG_SHIFT = (0.035, -0.02)
_RIG_SCALE = 0.94


def sample_scene(rng: np.random.Generator, subject: Subject, knobs: Knobs) -> Scene:
    """One sample's conditions: the face's pose in each camera (the infrared one offset as ``knobs.ir_misalign``
    says), the expression intensity, the room temperature, an occluder, and which failure, if any, each camera
    shows (bad light, a thermal artifact)."""
    pj = knobs.pose_jitter
    lo, hi = knobs.intensity
    pose = Pose(
        angle=math.radians(float(np.clip(rng.normal(0, 6), -15, 15)) * pj),
        scale=0.36 * (1 + rng.uniform(-0.08, 0.08) * pj) / subject.face_w**0.5,
        cx=0.5 + rng.uniform(-0.05, 0.05) * pj,
        cy=0.5 + rng.uniform(-0.04, 0.04) * pj,
    )
    ir_noise = (rng.normal(0, 1.0), rng.normal(0, 0.008), rng.normal(0, 0.008))
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
    # drawn after everything else, so that the default knobs leave every earlier draw (and image) as it was
    if knobs.face_scale != 1.0:
        pose = _reframe(rng, pose, knobs.face_scale)
    ir_pose = _rig(pose, ir_noise, knobs.ir_misalign)
    distractors = _distractors(rng, subject, ir_pose, int(knobs.warm_distractors))
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
        distractors=distractors,
    )


def _rig(pose: Pose, noise: tuple[float, float, float], m: float) -> Pose:
    """The thermal camera's view of a face the visible camera sees at ``pose``."""
    return Pose(
        angle=pose.angle + math.radians(noise[0]) * m,
        scale=pose.scale * _RIG_SCALE**m,
        cx=0.5 + (pose.cx - 0.5) * _RIG_SCALE**m + (_RIG_SHIFT[0] + noise[1]) * m,
        cy=0.5 + (pose.cy - 0.5) * _RIG_SCALE**m + (_RIG_SHIFT[1] + noise[2]) * m,
    )


def _reframe(rng: np.random.Generator, pose: Pose, face_scale: float) -> Pose:
    """``pose`` shrunk by ``face_scale`` and moved within the frame it frees."""
    room = 0.4 * (1.0 - face_scale)
    dx, dy = rng.uniform(-room, room, 2)
    return Pose(
        angle=pose.angle,
        scale=pose.scale * face_scale,
        cx=0.5 + (pose.cx - 0.5) * face_scale + dx,
        cy=0.5 + (pose.cy - 0.5) * face_scale + dy,
    )


# kind: (width range, height range, degrees above ambient), sizes as fractions of the side
_WARM_OBJECTS = {
    "radiator": ((0.3, 0.5), (0.1, 0.18), (14.0, 30.0)),
    "mug": ((0.05, 0.09), (0.07, 0.11), (25.0, 50.0)),
    "lamp": ((0.05, 0.1), (0.05, 0.1), (35.0, 70.0)),
}


def _distractors(rng: np.random.Generator, sj: Subject, ir_pose: Pose, n: int) -> tuple:
    """``n`` warm objects placed off the head and body (tried 30 times each; one that finds no room is left out)."""
    if n <= 0:
        return ()
    half_w, half_h = 1.35 * sj.face_w * ir_pose.scale, 1.45 * sj.face_w * sj.aspect * ir_pose.scale
    person = (ir_pose.cx - half_w, ir_pose.cy - half_h, ir_pose.cx + half_w, 1.0)
    out = []
    for _ in range(n):
        kind = str(rng.choice(list(_WARM_OBJECTS)))
        (w0, w1), (h0, h1), (t0, t1) = _WARM_OBJECTS[kind]
        w, h, warmth = rng.uniform(w0, w1), rng.uniform(h0, h1), rng.uniform(t0, t1)
        for x0, y0 in rng.uniform(0.0, 1.0, (30, 2)) * (1.0 - w, 1.0 - h):
            box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
            if not _overlaps(box, person) and not any(_overlaps(box, d[1:5]) for d in out):
                out.append((kind, *box, float(warmth)))
                break
    return tuple(out)


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _occluder(rng: np.random.Generator, sj: Subject, kind: str) -> tuple[list[Layer], float]:
    a, b = sj.face_w, sj.face_w * sj.aspect
    mouth = np.array([0.0, max(sj.mouth_y, sj.eye_y + sj.nose_len + 0.2)])
    if kind == "sunglasses":
        layers = [
            Layer("occluder", ellipse(side * sj.eye_dx, sj.eye_y + 0.01, sj.eye_w * 1.5, 0.15, 24)) for side in (-1, 1)
        ]
        layers.append(Layer("occluder", np.array([[-sj.eye_dx, sj.eye_y], [sj.eye_dx, sj.eye_y]]), 0.05))
        return layers, 0.0
    if kind == "mask":
        top = sj.eye_y + sj.nose_len * rng.uniform(0.45, 0.8)
        xs = np.linspace(-0.95, 0.95, 15) * a
        upper = top + 0.08 * (xs / a) ** 2
        lower = b * 0.98 - 0.35 * (xs / a) ** 2
        return [Layer("occluder", np.concatenate([curve(xs, upper), curve(xs, lower)[::-1]]))], 0.0
    target = mouth if rng.random() < 0.65 else np.array([rng.choice([-1, 1]) * sj.eye_dx, sj.eye_y])
    target = target + rng.normal(0, 0.06, 2)
    angle = rng.uniform(-0.6, 0.6)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if kind == "card":
        w, h = rng.uniform(0.35, 0.55), rng.uniform(0.22, 0.35)
        rect = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) @ rot.T + target
        return [Layer("occluder", rect)], float(rng.uniform(0.25, 0.45))
    # A hand reaching up from below: palm under the target, fingers across it.
    palm = ellipse(0, 0.42, 0.3, 0.26, 24)
    fingers = [
        np.array([[dx, 0.3], [dx * 1.2, -0.12 - 0.06 * (1 - abs(dx) / 0.2)]]) for dx in (-0.18, -0.06, 0.06, 0.18)
    ]
    layers = [Layer("occluder", palm @ rot.T + target)]
    layers += [Layer("occluder", f @ rot.T + target, 0.11) for f in fingers]
    return layers, 0.0
