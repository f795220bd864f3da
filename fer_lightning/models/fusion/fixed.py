"""The fixed-mixing modes: ``interleave`` (the study's order v0, i0, v1, i1, ...), ``concat`` (v..., i...) and
``sum``. ``interleave`` and ``concat`` give 2D features and differ only in layout; ``sum`` gives D."""

from __future__ import annotations

import torch

from fer_lightning.models.fusion.base import FixedFusion, register_fusion


class SideBySide(FixedFusion):
    """Both features kept whole: the head reads twice one branch's width."""

    @classmethod
    def width(cls, features: int) -> int:
        return 2 * features


@register_fusion("interleave")
class InterleaveFusion(SideBySide):
    @staticmethod
    def combine(visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        return torch.stack((visible, infrared), dim=2).flatten(1)


@register_fusion("concat")
class ConcatFusion(SideBySide):
    @staticmethod
    def combine(visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        return torch.cat((visible, infrared), dim=1)


@register_fusion("sum")
class SumFusion(FixedFusion):
    @staticmethod
    def combine(visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        return visible + infrared
