"""Backbone factory: a registry of trunks (torchvision ResNets, any timm model) with an optional attention gate.

Every LightningModule (visible, infrared, fusion) builds its feature extractors through
:func:`build_backbone`, so the models cannot drift apart. Names are the registered builders (``resnet18``,
``resnet34``, ``resnet50``) or ``timm/<model>`` for any model ``timm.list_models()`` knows.

Whatever the trunk, a :class:`Backbone` offers the last stage's spatial map (``feature_map``), the pooled and
attention-weighted vector (``pool``; ``forward(x) == pool(feature_map(x))``) and, through
:meth:`Backbone.cam_target`, the layer Grad-CAM should watch.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import torch
import torchvision
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.io import load_tensors

ATTENTIONS = ("none", "gate", "gate_sq")
TIMM_PREFIX = "timm/"
NO_WEIGHTS = (None, "", "none", "null")


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


def tokens_to_map(tokens: torch.Tensor, prefix: int, aspect: float = 1.0) -> torch.Tensor:
    """ViT tokens ``(N, prefix + h*w, C)`` -> patch map ``(N, C, h, w)``, class/register tokens dropped.

    The grid is the one of ``h * w`` patches with ``h / w == aspect`` (grad-cam's ViT ``reshape_transform``,
    which assumes a square 14x14 grid).
    """
    patches = tokens[:, prefix:]
    n = patches.shape[1]
    h = max(1, round(math.sqrt(n * aspect)))
    w = n // h
    if h * w != n:
        raise FERError(f"{n} patch tokens do not form a {aspect:.2f}:1 grid; feed square images (dataset.image_size)")
    return patches.transpose(1, 2).reshape(len(tokens), -1, h, w)


class TimmBackbone(Backbone):
    """A timm model created with ``num_classes=0``.

    CNNs: ``forward_features`` is the map and timm's own head (``forward_head(pre_logits=True)``) pools it.
    Token models (ViT, DeiT, EVA …): the map is the patch tokens without the class/register tokens, and the
    pooled vector is their mean (then the model's ``fc_norm``), so it is a function of the map as for CNNs.
    """

    def __init__(self, name: str, trunk: nn.Module, attention: str):
        fmt = str(getattr(trunk, "output_fmt", "NCHW"))
        layout = "NLC" if hasattr(trunk, "num_prefix_tokens") or fmt == "NLC" else fmt
        pooled = trunk.num_features if layout == "NLC" else getattr(trunk, "head_hidden_size", trunk.num_features)
        super().__init__(name, trunk, pooled, trunk.num_features, attention)
        self.layout = layout
        classifier = trunk.pretrained_cfg.get("classifier") or ()
        classifier = (classifier,) if isinstance(classifier, str) else classifier
        self.classifier_prefixes = tuple(f"{c}." for c in classifier)

    def _check_size(self, x: torch.Tensor) -> None:
        embed = getattr(self.trunk, "patch_embed", None)
        size = tuple(getattr(embed, "img_size", None) or ())
        if getattr(embed, "strict_img_size", False) and size and tuple(x.shape[-2:]) != size:
            raise FERError(
                f"backbone {self.name} takes {size[0]}x{size[1]} images, not {x.shape[-2]}x{x.shape[-1]}: set "
                f"dataset.image_size={size[0]} or model.backbone.kwargs={{img_size:{x.shape[-1]}}}"
            )

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        out = self.trunk.forward_features(x)
        if self.layout == "NLC" and out.ndim == 3:
            return tokens_to_map(out, getattr(self.trunk, "num_prefix_tokens", 0), x.shape[-2] / x.shape[-1])
        if out.ndim == 4:
            return out.permute(0, 3, 1, 2) if self.layout == "NHWC" else out
        raise FERError(f"backbone {self.name}: features of shape {tuple(out.shape)} are not a spatial map")

    def global_pool(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.layout == "NLC":
            return getattr(self.trunk, "fc_norm", nn.Identity())(fmap.mean((2, 3)))
        return self.trunk.forward_head(fmap.permute(0, 2, 3, 1) if self.layout == "NHWC" else fmap, pre_logits=True)

    def cam_target(self) -> tuple[nn.Module, Callable | None]:
        trunk = self.trunk
        if self.layout == "NLC":
            blocks = getattr(trunk, "blocks", None)
            if blocks is None or not hasattr(blocks[-1], "norm1"):
                return super().cam_target()
            # grad-cam's ViT recipe: the last block's first norm, tokens reshaped to the patch grid
            return blocks[-1].norm1, partial(tokens_to_map, prefix=getattr(trunk, "num_prefix_tokens", 0))
        info = getattr(trunk, "feature_info", None)
        if not info:
            return super().cam_target()
        layer = trunk.get_submodule(info[-1]["module"])  # timm's own record of its last stage
        return layer, (lambda t: t.permute(0, 3, 1, 2)) if self.layout == "NHWC" else None


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
            _load_trunk(backbone, _imagenet_state_dict(name, weights_enum), source=f"torchvision {weights_enum}")
        return backbone


_torchvision_resnet("resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
_torchvision_resnet("resnet34", torchvision.models.ResNet34_Weights.IMAGENET1K_V1)
_torchvision_resnet("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V2)
BACKBONES = tuple(_BUILDERS)


def list_backbones() -> tuple[str, ...]:
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
        backbone = _timm_backbone(name, attention, weights == "imagenet", dict(kwargs or {}))
    elif name in _BUILDERS:
        if kwargs:
            raise FERError(f"model.backbone.kwargs={dict(kwargs)}: only timm/ backbones take kwargs, not {name}")
        backbone = _BUILDERS[name](attention, weights == "imagenet")
    else:
        raise FERError(f"unknown backbone {name!r}: use one of {', '.join(list_backbones())} (model.backbone.name)")
    if weights not in (None, "imagenet"):
        _load_trunk(backbone, _read_state_dict(weights), source=weights)
    return backbone


def _read_state_dict(weights: str) -> dict[str, torch.Tensor]:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FERError(f"model.backbone.weights={weights!r}: no such file; give a state dict path, 'imagenet' or null")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except Exception as exc:  # safetensors raises several types for a bad file
            raise FERError(f"model.backbone.weights={path}: not a readable .safetensors file ({exc})") from exc
    else:
        state = load_tensors(path, "model.backbone.weights", unreadable="not a loadable state dict")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


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


def _timm_backbone(name: str, attention: str, imagenet: bool, kwargs: dict) -> Backbone:
    import timm

    model = name[len(TIMM_PREFIX) :]
    if not timm.is_model(model):
        stem = re.match(r"[A-Za-z]*", model).group(0)
        close = difflib.get_close_matches(model, timm.list_models(f"{stem}*") or timm.list_models(), n=3)
        raise FERError(
            f"unknown timm model {model!r} (model.backbone.name={name})"
            + (f": did you mean {', '.join(close)}?" if close else ";")
            + f" list candidates with timm.list_models('{stem}*')"
        )
    if imagenet:
        trunk = _timm_pretrained(name, model, kwargs)
    else:
        try:
            trunk = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
        except TypeError as exc:
            raise FERError(f"model.backbone.kwargs={kwargs}: {name} does not take them ({exc})") from exc
    return TimmBackbone(name, trunk, attention)


def _timm_pretrained(name: str, model: str, kwargs: dict) -> nn.Module:
    import timm
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise FERError(f"timm has no pretrained weights for {model}; pass model.backbone.weights=null")
    if cfg.hf_hub_id:
        where = f"the Hugging Face cache {constants.HF_HUB_CACHE} (repo {cfg.hf_hub_id})"
    else:
        where = str(Path(torch.hub.get_dir()) / "checkpoints" / str(cfg.url or cfg.file).rsplit("/", 1)[-1])
    try:
        with _hub_offline_when_unreachable(bool(cfg.hf_hub_id)):
            return timm.create_model(model, pretrained=True, num_classes=0, **kwargs)
    except TypeError as exc:
        raise FERError(f"model.backbone.kwargs={kwargs}: {name} does not take them ({exc})") from exc
    except Exception as exc:  # offline: huggingface_hub / URL errors, or a corrupt file
        raise FERError(
            f"cannot get ImageNet weights for {name} ({exc.__class__.__name__}); timm looks for them in {where}: "
            "fetch them there while online, pass model.backbone.weights=<file>, or model.backbone.weights=null"
        ) from exc


@cache
def _hub_reachable(endpoint: str) -> bool:
    """One request (5 s), once per process and endpoint: both branches of a fusion model share the answer."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=5)
    except Exception:  # DNS, refused, timeout, proxy: the Hub is out of reach
        return False
    return True


@contextlib.contextmanager
def _hub_offline_when_unreachable(uses_hub: bool):
    """Hugging Face Hub offline mode while the Hub cannot be reached, so a machine without network reads its
    cache, or fails at once, instead of retrying for ~45 s (HF_HUB_OFFLINE=1 does the same)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or (uses_hub and not _hub_reachable(constants.ENDPOINT))
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _load_trunk(backbone: Backbone, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads a bare trunk's state dict (its classifier ignored) or a full Backbone state dict."""
    full = any(k.startswith("trunk.") for k in state)
    target: nn.Module = backbone if full else backbone.trunk
    if not full:
        state = {k: v for k, v in state.items() if not k.startswith(backbone.classifier_prefixes)}
    own = target.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(("attention.", "projection."))]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or misshapen:
        bad = (misshapen or missing or unexpected)[:2]
        raise FERError(
            f"{source}: weights do not fit this backbone ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(misshapen)} misshapen keys, e.g. {bad}); check model.backbone.name"
        )
    target.load_state_dict(state, strict=False)
