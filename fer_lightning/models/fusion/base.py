"""The fusion-mode interface and its registry: a mode is one :class:`Fusion` subclass plus ``@register_fusion``.

The network (:class:`fer_lightning.models.networks.FusionNet`) builds the mode registered under ``model.fusion``
as its ``fuser`` and the head the mode asks for, then hands it each batch; it holds no per-mode branches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.modalities import CAMERAS
from fer_lightning.models.heads import build_head

if TYPE_CHECKING:
    from fer_lightning.models.networks import FusionNet

# name -> mode class, in registration order (the order errors and the tests list them)
FUSIONS: dict[str, type[Fusion]] = {}
LATE_COMBINES = ("mean", "learned")


class Fusion(nn.Module):
    """One fusion mode: how the two branches of a :class:`~fer_lightning.models.networks.FusionNet` give logits.

    A mode declares:

    - :meth:`width`: the width of the feature its head reads, from one branch's pooled width;
    - ``one_camera``: whether it can answer from one camera (then its forward gets a batch with one image);
    - :meth:`forward`: ``{"logits": (N, C)}``, the names in ``aux_outputs`` (``"weights"``: (N, 2) per-sample
      modality weights, recorded for the test; ``"branch_logits"``: per-branch logits for the auxiliary loss),
      and, optionally, ``"features"``: the pooled per-branch features the network's branch classifiers (its
      ``aux_heads``, where ``model.aux_loss_weight`` > 0) supervise;
    - :meth:`loss`: a training term of its own (the gate's), 0 by default.

    Its parameters are checkpoint keys ``fuser.*``; the head it builds is ``head.*``.

    Args:
        features: one branch's pooled width (both branches have it).
        map_channels: each branch's last-stage channels, for modes that work on the spatial maps.
        settings: the model's fusion settings (``late_combine``, ``gate``, ``cross_attention``); a mode takes
            the ones it reads as keywords and ignores the rest.
    """

    one_camera: ClassVar[bool] = False
    aux_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, features: int, map_channels: dict[str, int], **settings: Any):
        super().__init__()

    @classmethod
    def width(cls, features: int) -> int:
        return features

    def build_head(self, features: int, num_classes: int, head: dict) -> nn.Module:
        return build_head(self.width(features), num_classes, **head)

    def forward(
        self, net: FusionNet, images: dict[str, torch.Tensor], keep: dict[str, torch.Tensor] | None
    ) -> dict[str, Any]:
        """``images``: the normalised images present (both, or one for a ``one_camera`` mode); ``keep``: in
        training with modality dropout, per modality (N,) True where the branch is kept, else None."""
        raise NotImplementedError

    def loss(self, outputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor | float:
        return 0.0


def register_fusion(name: str) -> Callable[[type[Fusion]], type[Fusion]]:
    """Registers a :class:`Fusion` subclass as ``model.fusion=<name>`` (as ``register_backbone`` does)."""

    def add(mode: type[Fusion]) -> type[Fusion]:
        FUSIONS[name] = mode
        return mode

    return add


def one_camera_modes() -> tuple[str, ...]:
    """The modes that can predict from one camera."""
    return tuple(name for name, mode in FUSIONS.items() if mode.one_camera)


def check_fusion(mode: str, late_combine: str = "mean") -> None:
    """FERError naming ``model.fusion`` or ``model.late_combine`` when ``mode`` is not registered or
    ``late_combine`` is not one of :data:`LATE_COMBINES`."""
    if mode not in FUSIONS:
        raise FERError(f"model.fusion={mode}: unknown fusion mode; use one of {', '.join(FUSIONS)}")
    if late_combine not in LATE_COMBINES:
        raise FERError(f"model.late_combine={late_combine}: use one of {', '.join(LATE_COMBINES)}")


class FixedFusion(Fusion):
    """A mode that mixes the two pooled features with fixed weights (:meth:`combine`) into one head; a branch lost
    to modality dropout contributes zeros."""

    @staticmethod
    def combine(visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, net, images, keep):
        feats = net.pooled(images)
        mixed = feats if keep is None else {m: f * keep[m][:, None] for m, f in feats.items()}
        return {"logits": net.head(self.combine(mixed["visible"], mixed["infrared"])), "features": feats}


def fuse(visible: torch.Tensor, infrared: torch.Tensor, mode: str) -> torch.Tensor:
    """Combines two (N, D) feature batches with a fixed-weight mode's :meth:`FixedFusion.combine`."""
    fixed = [name for name, cls in FUSIONS.items() if issubclass(cls, FixedFusion)]
    if mode not in fixed:
        raise FERError(f"unknown fusion mode {mode!r}: use one of {', '.join(fixed)} (model.fusion)")
    return FUSIONS[mode].combine(visible, infrared)


def fused_features(features: int, mode: str) -> int:
    """Width of the feature the head sees, from one branch's pooled width."""
    return FUSIONS[mode].width(features)


def one_camera_weights(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, 2) modality weights all on the one branch present."""
    first = next(iter(feats.values()))
    index = torch.tensor(CAMERAS.index(next(iter(feats))), device=first.device)
    # shape[0], not len(): an ONNX export keeps the batch size a variable
    return F.one_hot(index, len(CAMERAS)).to(first.dtype).expand(first.shape[0], -1)
