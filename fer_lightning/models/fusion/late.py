"""``late``: a head per branch, their logits mixed by a mean or by one learned softmax pair."""

from __future__ import annotations

import torch
from torch import nn

from fer_lightning.modalities import CAMERAS
from fer_lightning.models.fusion.base import Fusion, one_camera_weights, register_fusion
from fer_lightning.models.heads import build_head


@register_fusion("late")
class LateFusion(Fusion):
    """Weights (N, 2) for averaging the branch heads' logits: 0.5 each (``late_combine: mean``), or one learned
    softmax pair shared by all samples (``learned``). A branch lost to modality dropout does not count; with one
    camera, its head answers alone."""

    one_camera = True
    aux_outputs = ("weights", "branch_logits")

    def __init__(self, features: int, map_channels: dict[str, int], late_combine: str = "mean", **settings):
        super().__init__(features, map_channels)
        self.learned = late_combine == "learned"
        if self.learned:
            self.logit = nn.Parameter(torch.zeros(len(CAMERAS)))

    def build_head(self, features: int, num_classes: int, head: dict) -> nn.Module:
        return nn.ModuleDict({m: build_head(features, num_classes, **head) for m in CAMERAS})

    def combine_weights(self, n: int, device: torch.device) -> torch.Tensor:
        logit = self.logit if self.learned else torch.zeros(len(CAMERAS), device=device)
        return logit.softmax(0).expand(n, -1)

    def forward(self, net, images, keep):
        feats = net.pooled(images)
        if len(feats) == 1:
            weights = one_camera_weights(feats)
        else:
            first = next(iter(feats.values()))
            weights = self.combine_weights(first.shape[0], first.device)
            if keep is not None:  # a dropped branch's logits do not count
                weights = weights * torch.stack([keep[m] for m in CAMERAS], 1)
                weights = weights / weights.sum(1, keepdim=True)
        w = {m: weights[:, k, None] for k, m in enumerate(CAMERAS) if m in feats}
        branch = {m: net.head[m](f) for m, f in feats.items()}
        logits = sum(w[m] * branch[m] for m in w)
        return {"logits": logits, "branch_logits": branch, "weights": weights if self.learned else None}
