"""The networks, plain ``nn.Module``s apart from any training logic (:mod:`fer_lightning.models.lightning` trains
them): backbone + head for one camera, two branches + a fusion mode for both.

Both take a dict of normalised images ``{"visible": (N,3,H,W), "infrared": (N,3,H,W)}`` with the modalities they
read and return ``{"logits": (N, num_classes), ...}``. Their state-dict keys are the checkpoints' (``backbones.*``,
``head.*``, ``fuser.*``, ``aux_heads.*``), so :func:`build_network` plus ``load_state_dict(checkpoint["state_dict"])``
is the trained model without its LightningModule. Every branch comes from the one backbone factory,
:func:`~fer_lightning.models.backbones.build_backbone`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.io import read_checkpoint
from fer_lightning.modalities import CAMERAS
from fer_lightning.models.backbones import build_backbone
from fer_lightning.models.fusion import FUSIONS, check_fusion, one_camera_modes
from fer_lightning.models.heads import build_head


class SingleModalityNet(nn.Module):
    """A visible-only or infrared-only classifier: backbone -> attention -> head."""

    supports_missing = False

    def __init__(self, num_classes: int, modality: str, backbone: dict, head: dict):
        super().__init__()
        if modality not in ("visible", "infrared"):
            raise FERError(f"SingleModalityModule takes modality visible or infrared, not {modality!r}")
        self.modality = modality
        self.backbones = nn.ModuleDict({modality: build_backbone(**backbone)})
        self.head = build_head(self.backbones[modality].out_features, num_classes, **head)

    def forward(self, images: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"logits": self.head(self.backbones[self.modality](images[self.modality]))}


def branch_backbones(backbone: dict, infrared_backbone: dict | None = None) -> nn.ModuleDict:
    """The visible and infrared backbones: ``infrared_backbone``'s non-null keys override ``backbone``'s for the
    infrared branch; where the two families' widths differ, the narrower one is projected to the wider's."""
    ir_given = {k: v for k, v in (infrared_backbone or {}).items() if v is not None}
    ir_args = {**backbone, **ir_given}
    if ir_args.get("name") != backbone.get("name"):
        # the visible model's timm arguments and weights file need not fit another model; imagenet does
        if "kwargs" not in ir_given:
            ir_args.pop("kwargs", None)
        if "weights" not in ir_given and ir_args.get("weights") != "imagenet":
            ir_args.pop("weights", None)
    return nn.ModuleDict({"visible": build_backbone(**backbone), "infrared": build_backbone(**ir_args)})


def load_infrared_branch(backbone: nn.Module, path: Path) -> None:
    """Loads the infrared backbone of a trained infrared checkpoint (``model.infrared_init``) into ``backbone``."""
    if not path.is_file():
        raise FERError(f"model.infrared_init={path}: no such checkpoint; train modality=infrared first")
    state = read_checkpoint(path, key="model.infrared_init")["state_dict"]
    prefix = "backbones.infrared."
    branch = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not branch:
        raise FERError(f"{path}: not an infrared checkpoint (no {prefix}* weights)")
    backbone.load_state_dict(branch)


class FusionNet(nn.Module):
    """Two backbones (visible, infrared) and the fusion mode registered as ``fusion`` (its ``fuser``).

    Args:
        fusion: a name in :data:`~fer_lightning.models.fusion.FUSIONS`.
        infrared_backbone / infrared_init: see :class:`~fer_lightning.models.lightning.FusionModule`.
        aux_heads: a linear classifier per branch on its pooled feature (``aux_heads``), unless the mode has
            branch logits of its own.
        late_combine / gate / cross_attention: the fusion settings, passed to the mode.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: dict,
        head: dict,
        fusion: str = "interleave",
        infrared_backbone: dict | None = None,
        infrared_init: str | None = None,
        aux_heads: bool = False,
        late_combine: str = "mean",
        gate: dict | None = None,
        cross_attention: dict | None = None,
    ):
        super().__init__()
        check_fusion(fusion, late_combine)
        self.fusion = fusion
        self.backbones = branch_backbones(backbone, infrared_backbone)
        if infrared_init:
            load_infrared_branch(self.backbones["infrared"], Path(infrared_init))
        widths = {m: b.out_features for m, b in self.backbones.items()}
        if len(set(widths.values())) > 1:  # two backbone families: fusion pairs features one to one
            self.backbones[min(widths, key=widths.get)].project_to(max(widths.values()))
        # every mode sees each branch's pooled feature of width ``features``
        features = self.backbones["visible"].out_features
        map_channels = {m: self.backbones[m].map_channels for m in CAMERAS}
        mode = FUSIONS[fusion]
        settings = {"late_combine": late_combine, "gate": gate, "cross_attention": cross_attention}
        self.fuser = mode(features, map_channels, **settings)
        self.head = self.fuser.build_head(features, num_classes, head)
        self.aux_heads = None
        if aux_heads and "branch_logits" not in mode.aux_outputs:
            self.aux_heads = nn.ModuleDict({m: nn.Linear(features, num_classes) for m in CAMERAS})

    @property
    def supports_missing(self) -> bool:
        """Whether it predicts from one camera (the mode's ``one_camera``)."""
        return self.fuser.one_camera

    def pooled(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each present branch's pooled feature (N, features)."""
        return {m: self.backbones[m](x) for m, x in images.items()}

    def present(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The images of ``batch`` in modality order; one FERError line when the mode needs both."""
        images = {m: batch[m] for m in CAMERAS if m in batch}
        if len(images) < len(CAMERAS) and (not images or not self.supports_missing):
            lacking = " and ".join(m for m in CAMERAS if m not in images)
            raise FERError(
                f"model.fusion={self.fusion} needs both images but {lacking} is missing; "
                f"only {' and '.join(one_camera_modes())} fusion predict from one modality"
            )
        return images

    def forward(self, batch: dict[str, torch.Tensor], keep: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """``logits``, the mode's ``aux_outputs`` and, with branch classifiers, ``branch_logits``. ``keep``: in
        training with modality dropout, per modality (N,) True where the branch is kept."""
        out = self.fuser(self, self.present(batch), keep)
        features = out.pop("features", {})
        if self.aux_heads is not None and "branch_logits" not in out:
            out["branch_logits"] = {m: self.aux_heads[m](f) for m, f in features.items()}
        return out


def build_network(hparams: Mapping[str, Any]) -> nn.Module:
    """The network of a model's settings: a LightningModule's constructor arguments, e.g. a checkpoint's
    ``hyper_parameters`` (a ``modality`` key: one camera; none: fusion). Training settings are not its concern."""
    if "modality" in hparams:
        return SingleModalityNet(**_accepted(SingleModalityNet, hparams))
    return FusionNet(aux_heads=bool(hparams.get("aux_loss_weight")), **_accepted(FusionNet, hparams))


def _accepted(cls: type, hparams: Mapping[str, Any]) -> dict[str, Any]:
    keys = inspect.signature(cls).parameters
    return {k: v for k, v in hparams.items() if k in keys}
