"""Difficulty of the synthetic faces: :class:`Knobs` and the named presets in :data:`DIFFICULTIES`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Knobs:
    """Difficulty settings. Fractions are per sample; with ``disjoint_failures`` the visible failures
    (bad light) and the infrared failures (artifacts) never hit the same sample."""

    # Expression strength range, 1 = full expression. The default exaggerates a little, so that the 12-epoch
    # default job at 64 px from scratch can learn it (docs/benchmarks.md#the-synthetic-datas-difficulty).
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
    # the share of the expression the thermal camera sees (face shape and heat cues); 0: every thermal image
    # shows a neutral face, so the infrared modality carries no label (for the uninformative-modality test)
    ir_expression: float = 1.0
    disjoint_failures: bool = True
    # near-identical copies written beside each sample, as video frames and burst shots give (a small shift of
    # both cameras, sensor noise and a JPEG re-encoding of the sample): 2 writes two copies of every sample, 0.5
    # one copy of half of them. The copies are drawn after the sample, so its own pixels do not change.
    near_duplicates: float = 0.0
    # the face's size relative to today's framing: 0.5 draws it at half size somewhere in a frame of the same
    # pixel size, with the background clutter around it (a scene, not a face-centred crop); 1 keeps the framing
    face_scale: float = 1.0
    # warm objects that are not faces in the thermal image (radiator, mug, lamp), placed beside the face
    warm_distractors: float = 0.0

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
        for key in ("vis_bad_light_frac", "occlusion_frac", "ir_artifact_frac", "ir_expression"):
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
            "near_duplicates",
            "warm_distractors",
        ):
            need(getattr(self, key) >= 0.0, key, "must be >= 0")
        need(0.0 <= self.identity_spread <= 1.0, "identity_spread", "must be in [0, 1]")
        need(0.2 <= self.face_scale <= 1.0, "face_scale", "must be in [0.2, 1]")
        need(self.warm_distractors == int(self.warm_distractors), "warm_distractors", "must be a whole number")
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
