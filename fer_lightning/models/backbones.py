"""Backbone factory: a registry of trunks (torchvision ResNets, any timm model) with an optional attention gate.

Every LightningModule (visible, infrared, fusion) builds its feature extractors through
:func:`build_backbone`, so the models cannot drift apart. Names are the registered builders (``resnet18``,
``resnet34``, ``resnet50``) or ``timm/<model>`` for any model ``timm.list_models()`` knows
(:mod:`.timm_backbones`).

Whatever the trunk, it is a :class:`~fer_lightning.models.backbone_base.Backbone`: a feature map, its pooled
vector, and the layer Grad-CAM should watch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.models.backbone_base import Backbone
from fer_lightning.models.backbone_weights import imagenet_state_dict, load_trunk, read_state_dict
from fer_lightning.models.timm_backbones import TIMM_PREFIX, build_timm_backbone

NO_WEIGHTS = (None, "", "none", "null")


class ResNetBackbone(Backbone):
    classifier_prefixes = ("fc.",)

    def __init__(self, name: str, trunk: nn.Module, attention: str):
        features = trunk.fc.in_features
        trunk.fc = nn.Identity()  # state-dict keys stay trunk.*, as checkpoints written before the timm family
        super().__init__(name, trunk, features, features, attention)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))

    def global_pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.trunk.avgpool(fmap), 1)

    def cam_target(self) -> tuple[nn.Module, Callable | None]:
        return self.trunk.layer4, None


# ------------------------------------------------------------------------------------------- registry

# name -> builder(attention, imagenet: bool) -> Backbone
_BUILDERS: dict[str, Callable[[str, bool], Backbone]] = {}


def register_backbone(name: str):
    """Registers ``builder(attention, imagenet)`` under ``name`` (timm's ``register_model``, in small)."""

    def add(builder: Callable[[str, bool], Backbone]) -> Callable[[str, bool], Backbone]:
        _BUILDERS[name] = builder
        return builder

    return add


def _torchvision_resnet(name: str, weights_enum) -> None:
    builder = getattr(torchvision.models, name)

    @register_backbone(name)
    def build(attention: str, imagenet: bool) -> Backbone:
        backbone = ResNetBackbone(name, builder(weights=None), attention)
        if imagenet:
            load_trunk(backbone, imagenet_state_dict(name, weights_enum), source=f"torchvision {weights_enum}")
        return backbone


_torchvision_resnet("resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
_torchvision_resnet("resnet34", torchvision.models.ResNet34_Weights.IMAGENET1K_V1)
_torchvision_resnet("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
BACKBONES = tuple(_BUILDERS)


def list_backbones() -> tuple[str, ...]:
    """The registered names and the ``timm/<any timm model>`` pattern, as messages list the choices."""
    return (*BACKBONES, f"{TIMM_PREFIX}<any timm model>")


def build_backbone(
    name: str = "resnet18", attention: str = "gate", weights: str | None = None, kwargs: dict | None = None
) -> Backbone:
    """Builds a backbone by name.

    Args:
        name: one of :data:`BACKBONES`, or ``timm/<model>``.
        attention: ``none``, ``gate`` (the study's ``x * sigmoid(Wx)``) or ``gate_sq``.
        weights: ``None`` for random initialisation, ``"imagenet"`` for torchvision's / timm's ImageNet weights,
            or the path of a saved state dict (of the bare trunk or of a :class:`Backbone`; ``.safetensors`` too).
        kwargs: extra ``timm.create_model`` arguments (timm backbones only), e.g. ``{"img_size": 64}`` for a ViT.
    """
    weights = None if weights in NO_WEIGHTS else str(weights)
    if name.startswith(TIMM_PREFIX):
        backbone = build_timm_backbone(name, attention, weights == "imagenet", dict(kwargs or {}))
    elif name in _BUILDERS:
        if kwargs:
            raise FERError(f"model.backbone.kwargs={dict(kwargs)}: only timm/ backbones take kwargs, not {name}")
        backbone = _BUILDERS[name](attention, weights == "imagenet")
    else:
        raise FERError(f"unknown backbone {name!r}: use one of {', '.join(list_backbones())} (model.backbone.name)")
    if weights not in (None, "imagenet"):
        load_trunk(backbone, read_state_dict(weights), source=weights)
    return backbone
