"""``gated``: per-sample weights over the two modalities from both pooled features and cheap image-quality
statistics (:class:`GatedFusion`); the fused feature is the weighted sum of the unit-RMS branch features. Also the
gate's training target and the summary of its weights that results.json records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.modalities import CAMERAS
from fer_lightning.models.fusion.base import Fusion, one_camera_weights, register_fusion


def image_quality(images: torch.Tensor) -> torch.Tensor:
    """(N, 3) per image: mean, std and log(1 + gradient energy), the cheap signs of a dead, washed-out, blurred
    or noisy sensor."""
    flat = images.flatten(1)
    dx = images[..., :, 1:] - images[..., :, :-1]
    dy = images[..., 1:, :] - images[..., :-1, :]
    energy = dx.pow(2).flatten(1).mean(1) + dy.pow(2).flatten(1).mean(1)
    return torch.stack((flat.mean(1), flat.std(1), torch.log1p(energy)), dim=1)


@register_fusion("gated")
class GatedFusion(Fusion):
    """Per-sample weights (N, 2) over (visible, infrared), a softmax, from both pooled features (and, with
    ``gate.quality``, :func:`image_quality` of both input images); the head reads the weighted sum of the branches'
    unit-RMS features. A branch lost to modality dropout gets a junk image (noise or a constant,
    :func:`junk_images`), so the gate learns to spot a failed camera rather than zeros, and :meth:`loss` trains the
    gate towards :func:`gate_target` with weight ``gate.loss_weight``. With one camera: all weight on it, and its
    own branch classifier answers where the network has them."""

    one_camera = True
    aux_outputs = ("weights",)

    def __init__(self, features: int, map_channels: dict[str, int], gate: dict | None = None, **settings):
        super().__init__(features, map_channels)
        gate = {"hidden": 64, "quality": True, "loss_weight": 1.0, **(gate or {})}
        self.loss_weight = float(gate.pop("loss_weight"))
        self._build(features, **gate)

    def _build(self, features: int, hidden: int = 64, quality: bool = True) -> None:
        self.quality = quality
        extra = 3 * len(CAMERAS) if quality else 0
        self.net = nn.Sequential(
            nn.Linear(len(CAMERAS) * features + extra, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2)
        )

    def gate(self, features: dict[str, torch.Tensor], images: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [features[m] for m in CAMERAS]
        if self.quality:
            parts += [image_quality(images[m].float()) for m in CAMERAS]
        return self.net(torch.cat(parts, dim=1)).softmax(dim=1)

    def forward(self, net, images, keep):
        if keep is not None:
            images = {m: torch.where(keep[m][:, None, None, None], x, junk_images(x)) for m, x in images.items()}
        feats = net.pooled(images)
        weights = one_camera_weights(feats) if len(feats) == 1 else self.gate(feats, images)
        if len(feats) == 1 and net.aux_heads is not None:
            # One camera: its own classifier, trained on every sample of that branch, not the fused head,
            # which never saw a feature without its partner's share and scores far lower on one camera
            # (docs/benchmarks.md#single-settings-of-the-fusion-model).
            ((m, f),) = feats.items()
            logits = net.aux_heads[m](f)
            return {"logits": logits, "branch_logits": {m: logits}, "weights": weights}
        w = {m: weights[:, k, None] for k, m in enumerate(CAMERAS) if m in feats}
        # Unit-RMS features, so that a weight is its branch's share of the fused feature.
        # the width as a constant (the branches' out_features), so the ONNX export can trace the norm
        fused = sum(w[m] * F.layer_norm(feats[m], (net.backbones[m].out_features,)) for m in w)
        return {"logits": net.head(fused), "weights": weights, "features": feats}

    def loss(self, outputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor | float:
        if not self.loss_weight:
            return 0.0
        target = gate_target(labels, outputs.get("branch_logits"), outputs.get("keep"))
        if target is None:
            return 0.0
        # the mean over rows with a target, without boolean indexing: that would wait for the GPU each step
        # (an all-zero row adds nothing to the sum)
        rows = (target.sum(1) > 0).sum().clamp_min(1)
        log_w = torch.log(outputs["weights"].clamp_min(1e-6))
        return self.loss_weight * -(target * log_w).sum() / rows


def junk_images(images: torch.Tensor) -> torch.Tensor:
    """Stand-ins for a failed camera, one per image: Gaussian noise of random strength, or a constant (a dead
    sensor), in the normalised input's units."""
    n = len(images)
    shape = (n, 1, 1, 1)
    noise = torch.randn_like(images) * torch.empty(shape, device=images.device).uniform_(0.5, 2.0)
    dead = torch.randn(shape, device=images.device, dtype=images.dtype).expand_as(images)
    use_noise = torch.rand(shape, device=images.device) < 0.5
    return torch.where(use_noise, noise, dead)


def gate_target(
    labels: torch.Tensor,
    branch_logits: dict[str, torch.Tensor] | None = None,
    keep: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """What the gate should have said, (N, 2), with all-zero rows where nothing is known; None: nothing at all.

    From per-branch classifiers: each branch's probability of the true class, normalised over the two, so the gate
    learns to trust whichever camera is right on this kind of sample (the thermal one on a dark photo, the photo
    when the thermal image has an artifact). On modality-dropped samples (``keep``): all on the kept branch.
    """
    if branch_logits is None and keep is None:
        return None
    if branch_logits is not None:
        # class indices (N,), or class probabilities (N, C) such as mixup's blends: the probability of the target
        p_true = [
            (p * labels).sum(1) if labels.ndim == 2 else p.gather(1, labels[:, None])[:, 0]
            for p in (branch_logits[m].detach().softmax(1) for m in CAMERAS)
        ]
        target = torch.stack(p_true, 1)
        target = target / target.sum(1, keepdim=True).clamp_min(1e-6)
    else:
        target = torch.zeros(len(labels), len(CAMERAS), device=labels.device)
    if keep is not None:
        kept = torch.stack([keep[m] for m in CAMERAS], 1).to(target.dtype)
        target = torch.where((kept.sum(1) < len(CAMERAS))[:, None], kept, target)
    return target


def modality_weight_summary(
    weights: torch.Tensor, labels: torch.Tensor | Sequence, classes: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Mean modality weights per group: ``{group: {"visible": w, "infrared": w, "n": k}, ..., "all": {...}}``.

    ``labels`` are class indices named by ``classes``, or (``classes=None``) group names such as the synthetic
    data's per-sample conditions.
    """
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim != 2 or weights.shape[1] != len(CAMERAS):
        raise FERError(f"modality weights must have shape (N, 2), got {tuple(weights.shape)}")
    keys = [classes[int(k)] for k in labels] if classes is not None else [str(k) for k in labels]
    if len(keys) != len(weights):
        raise FERError(f"{len(keys)} labels for {len(weights)} weight rows")
    groups = list(dict.fromkeys(keys if classes is None else [c for c in classes if c in keys]))
    summary = {}
    for group in [*groups, "all"]:
        rows = weights if group == "all" else weights[torch.tensor([k == group for k in keys])]
        mean = rows.mean(0).tolist()
        summary[group] = {**{m: round(w, 4) for m, w in zip(CAMERAS, mean, strict=True)}, "n": len(rows)}
    return summary
