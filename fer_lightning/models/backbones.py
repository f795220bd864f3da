"""Backbone factory: a name -> builder registry of ResNets with an optional attention gate.

Every LightningModule (visible, infrared, fusion) builds its feature extractors through
:func:`build_backbone`, so the three models cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
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
    if kind == "none":
        return nn.Identity()
    if kind in ("gate", "gate_sq"):
        return FeatureGate(features, square=kind == "gate_sq")
    raise FERError(f"unknown attention {kind!r}: use one of {', '.join(ATTENTIONS)}")


# name -> (torchvision builder, ImageNet weights enum, pooled feature size)
_RESNETS: dict[str, tuple[Callable[..., nn.Module], object, int]] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2, 2048),
}
BACKBONES = tuple(_RESNETS)


class Backbone(nn.Module):
    """A ResNet trunk without its classifier, followed by an attention block.

    ``forward(x) == pool(feature_map(x))``: the pooled, attention-weighted feature vector of size ``out_features``.
    ``feature_map`` is the last stage's (N, map_channels, h, w) output (``trunk.layer4``, Grad-CAM's target), for
    fusion modes that work on spatial maps.
    """

    def __init__(self, trunk: nn.Module, out_features: int, attention: str):
        super().__init__()
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.attention = make_attention(attention, out_features)
        self.out_features = out_features
        self.map_channels = out_features  # a ResNet's average pool keeps the last stage's width

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.attention(torch.flatten(self.trunk.avgpool(fmap), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))


def build_backbone(name: str = "resnet18", attention: str = "gate", weights: str | None = None) -> Backbone:
    """Builds a backbone by name.

    Args:
        name: one of :data:`BACKBONES`.
        attention: ``none``, ``gate`` (the study's ``x * sigmoid(Wx)``) or ``gate_sq``.
        weights: ``None`` for random initialisation, ``"imagenet"`` for torchvision's ImageNet weights,
            or the path of a saved state dict (of a torchvision ResNet or of a :class:`Backbone`).
    """
    if name not in _RESNETS:
        raise FERError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)} (model.backbone.name)")
    builder, imagenet, features = _RESNETS[name]
    backbone = Backbone(builder(weights=None), features, attention)
    if weights in (None, "", "none", "null"):
        return backbone
    if weights == "imagenet":
        _load_trunk(backbone, _imagenet_state_dict(name, imagenet), source=f"torchvision {imagenet}")
    else:
        path = Path(str(weights)).expanduser()
        if not path.is_file():
            raise FERError(
                f"model.backbone.weights={weights!r}: no such file; give a state dict path, 'imagenet' or null"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise FERError(f"{path}: not a loadable state dict ({exc.__class__.__name__}: {exc})") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        _load_trunk(backbone, state, source=str(path))
    return backbone


def _imagenet_state_dict(name: str, weights_enum) -> dict[str, torch.Tensor]:
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline: URLError, socket errors, hash mismatch
        filename = weights_enum.url.rsplit("/", 1)[-1]
        cache = Path(torch.hub.get_dir()) / "checkpoints" / filename
        raise FERError(
            f"cannot get ImageNet weights for {name} ({exc.__class__.__name__}); download {weights_enum.url} "
            f"to {cache}, or pass model.backbone.weights=null to train from scratch"
        ) from exc


def _load_trunk(backbone: Backbone, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads a torchvision ResNet state dict (classifier ignored) or a full Backbone state dict."""
    full = any(k.startswith("trunk.") for k in state)
    target: nn.Module = backbone if full else backbone.trunk
    if not full:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = target.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("attention.")]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or misshapen:
        bad = (misshapen or missing or unexpected)[:2]
        raise FERError(
            f"{source}: weights do not fit this backbone ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(misshapen)} misshapen keys, e.g. {bad}); check model.backbone.name"
        )
    target.load_state_dict(state, strict=False)
