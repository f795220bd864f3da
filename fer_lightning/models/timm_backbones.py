"""Any timm model as a :class:`~fer_lightning.models.backbone_base.Backbone` (``model.backbone.name=timm/<model>``),
with its ImageNet weights from timm's caches."""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import torch
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.models.backbone_base import Backbone

TIMM_PREFIX = "timm/"


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


def build_timm_backbone(name: str, attention: str, imagenet: bool, kwargs: dict) -> Backbone:
    """The backbone ``timm/<model>`` (``kwargs`` go to ``timm.create_model``); FERError for a model timm does not
    know (with the closest names), for kwargs it does not take, or for ImageNet weights it cannot get."""
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
