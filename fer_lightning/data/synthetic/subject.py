"""A synthetic person: the identity that stays fixed across one subject's samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
            skin=rgb(skin),
            lips=rgb(lips),
            hair=rgb(hair),
            iris=pick(_IRIS_COLOURS),
            clothes=rgb(u(20, 230, 3)),
            glasses=rgb(rng.uniform(10, 120, 3)) if glasses_draw < 0.2 else None,
            beard=None if beard_draw > 0.2 else ("full" if beard_draw < 0.12 else "goatee"),
            skin_temp=u(33.6, 34.8),
            light_side=int(rng.choice([-1, 1])),
        )


def rgb(c: Any) -> tuple[int, int, int]:
    """An RGB triple of ints in [0, 255] from any three numbers (rounded and clipped), as Pillow's drawing wants."""
    r, g, b = np.clip(np.round(np.asarray(c, dtype=np.float64)), 0, 255).astype(int)
    return int(r), int(g), int(b)
