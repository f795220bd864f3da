"""The interface every backbone offers, and the study's attention gate on its pooled feature.

A :class:`Backbone` gives the last stage's spatial map (``feature_map``), the pooled and attention-weighted
vector (``pool``; ``forward(x) == pool(feature_map(x))``) and, through :meth:`Backbone.cam_target`, the layer
Grad-CAM should watch. The families (:mod:`.backbones`, :mod:`.timm_backbones`) say how their trunk does each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fer_lightning.errors import FERError

ATTENTIONS = ("none", "gate", "gate_sq")


class FeatureGate(nn.Module):
    """The study's feature attention: ``x * sigmoid(W x)``.

    With ``square=True`` the gate is computed from ``x * x`` instead (``x * sigmoid(W (x*x))``),
    which is what the study's fusion script did in its infrared branch.
    """

    def __init__(self, features: int, square: bool = False):
        super().__init__()
        self.fc = nn.Linear(features, features)
        self.square = square

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x * x if self.square else x))


def make_attention(kind: str, features: int) -> nn.Module:
    """The block applied to the pooled ``features``-wide vector: ``none`` (identity), ``gate`` or ``gate_sq``
    (:class:`FeatureGate`); FERError for another ``kind``."""
    if kind == "none":
        return nn.Identity()
    if kind in ("gate", "gate_sq"):
        return FeatureGate(features, square=kind == "gate_sq")
    raise FERError(f"unknown attention {kind!r}: use one of {', '.join(ATTENTIONS)}")


class Backbone(nn.Module):
    """A trunk without its classifier, its global pooling, then an attention block.

    ``feature_map(x)`` is the last stage's ``(N, map_channels, h, w)`` map, ``pool(fmap)`` the pooled,
    attention-weighted ``(N, out_features)`` vector. Subclasses say how their trunk gives the map and pools it.
    """

    # keys of the trunk's classifier in a bare trunk's state dict; they are dropped on loading
    classifier_prefixes: tuple[str, ...] = ()

    def __init__(self, name: str, trunk: nn.Module, pooled: int, map_channels: int, attention: str):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.attention = make_attention(attention, pooled)
        # Identity until project_to(): a fusion model whose branches differ in width projects the narrower one.
        self.projection: nn.Module = nn.Identity()
        self.out_features = pooled
        self.map_channels = map_channels

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def global_pool(self, fmap: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.projection(self.attention(self.global_pool(fmap)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))

    def project_to(self, width: int) -> None:
        """Appends a linear map from the pooled width to ``width``: ``out_features`` becomes ``width``."""
        self.projection = nn.Linear(self.out_features, width)
        self.out_features = width

    def cam_target(self) -> tuple[nn.Module, Callable | None]:
        """``(layer, reshape_transform or None)`` for pytorch_grad_cam; FERError where no layer fits."""
        raise FERError(f"explain does not support backbone {self.name}: no Grad-CAM target layer is known for it")
