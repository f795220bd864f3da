"""The fusion networks: how two branches' features become one prediction (no training logic here).

- ``interleave`` (the study: v0, i0, v1, i1, ...), ``concat`` and ``sum``: :func:`fuse`, fixed mixing.
- ``late``: a head per branch; :class:`LateCombine` mixes their logits by a mean or by learned weights.
- ``gated``: :class:`ModalityGate` gives per-sample weights over the two modalities (softmax, they sum to 1) from
  both pooled features and cheap image-quality statistics; the fused feature is the weighted sum.
- ``attention``: :class:`CrossModalAttention`, transformer blocks over both branches' last-stage spatial maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.modalities import MODALITIES

FUSIONS = ("interleave", "concat", "sum", "late", "gated", "attention")
# Modes that can predict from one modality (their fused feature or logits are a weighted sum over branches).
MISSING_OK = ("late", "gated")
LATE_COMBINES = ("mean", "learned")


def check_fusion(mode: str, late_combine: str = "mean") -> None:
    if mode not in FUSIONS:
        raise FERError(f"model.fusion={mode}: unknown fusion mode; use one of {', '.join(FUSIONS)}")
    if late_combine not in LATE_COMBINES:
        raise FERError(f"model.late_combine={late_combine}: use one of {', '.join(LATE_COMBINES)}")


def fuse(visible: torch.Tensor, infrared: torch.Tensor, mode: str) -> torch.Tensor:
    """Combines two (N, D) feature batches with fixed weights.

    ``interleave`` is the study's order (v0, i0, v1, i1, ...); ``concat`` is (v..., i...); both give 2D
    features and differ only in layout. ``sum`` gives D.
    """
    if mode == "interleave":
        return torch.stack((visible, infrared), dim=2).flatten(1)
    if mode == "concat":
        return torch.cat((visible, infrared), dim=1)
    if mode == "sum":
        return visible + infrared
    raise FERError(f"unknown fusion mode {mode!r}: use one of interleave, concat, sum (model.fusion)")


def fused_features(features: int, mode: str) -> int:
    """Width of the feature the head sees, from one branch's pooled width."""
    return 2 * features if mode in ("interleave", "concat", "attention") else features


def image_quality(images: torch.Tensor) -> torch.Tensor:
    """(N, 3) per image: mean, std and log(1 + gradient energy), the cheap signs of a dead, washed-out, blurred
    or noisy sensor."""
    flat = images.flatten(1)
    dx = images[..., :, 1:] - images[..., :, :-1]
    dy = images[..., 1:, :] - images[..., :-1, :]
    energy = dx.pow(2).flatten(1).mean(1) + dy.pow(2).flatten(1).mean(1)
    return torch.stack((flat.mean(1), flat.std(1), torch.log1p(energy)), dim=1)


class ModalityGate(nn.Module):
    """Per-sample weights (N, 2) over (visible, infrared), a softmax, from both pooled features (and optionally
    :func:`image_quality` of both input images)."""

    def __init__(self, features: int, hidden: int = 64, quality: bool = True):
        super().__init__()
        self.quality = quality
        extra = 3 * len(MODALITIES) if quality else 0
        self.net = nn.Sequential(
            nn.Linear(len(MODALITIES) * features + extra, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2)
        )

    def forward(self, features: dict[str, torch.Tensor], images: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [features[m] for m in MODALITIES]
        if self.quality:
            parts += [image_quality(images[m].float()) for m in MODALITIES]
        return self.net(torch.cat(parts, dim=1)).softmax(dim=1)


class LateCombine(nn.Module):
    """Weights (N, 2) for averaging the branch heads' logits: 0.5 each (``mean``), or one learned softmax pair
    shared by all samples (``learned``)."""

    def __init__(self, combine: str = "mean"):
        super().__init__()
        self.learned = combine == "learned"
        if self.learned:
            self.logit = nn.Parameter(torch.zeros(len(MODALITIES)))

    def forward(self, n: int, device: torch.device) -> torch.Tensor:
        logit = self.logit if self.learned else torch.zeros(len(MODALITIES), device=device)
        return logit.softmax(0).expand(n, -1)


class CrossModalAttention(nn.Module):
    """Refines both branches' (N, C, h, w) maps with transformer blocks over the tokens of both.

    Each map's h*w positions become tokens (projected to ``dim``, plus a learned modality embedding); self-attention
    over the joint sequence lets every visible position attend to every thermal one and back. The result is added
    back to each map (zero-initialised projection, so training starts from plain concat fusion); the maps keep
    their shape, so each backbone's own pooling and attention gate still apply.
    """

    def __init__(self, channels: dict[str, int], dim: int = 256, heads: int = 4, layers: int = 1, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise FERError(f"model.cross_attention: dim={dim} must be divisible by heads={heads}")
        self.proj_in = nn.ModuleDict({m: nn.Linear(channels[m], dim) for m in MODALITIES})
        self.modality_embedding = nn.Parameter(torch.randn(len(MODALITIES), dim) * 0.02)
        block = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.proj_out = nn.ModuleDict({m: nn.Linear(dim, channels[m]) for m in MODALITIES})
        for proj in self.proj_out.values():
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = [
            self.proj_in[m](maps[m].flatten(2).transpose(1, 2)) + self.modality_embedding[k]
            for k, m in enumerate(MODALITIES)
        ]
        mixed = self.encoder(torch.cat(tokens, dim=1)).split([t.shape[1] for t in tokens], dim=1)
        return {
            m: maps[m] + self.proj_out[m](out).transpose(1, 2).reshape(maps[m].shape)
            for m, out in zip(MODALITIES, mixed, strict=True)
        }


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
            for p in (branch_logits[m].detach().softmax(1) for m in MODALITIES)
        ]
        target = torch.stack(p_true, 1)
        target = target / target.sum(1, keepdim=True).clamp_min(1e-6)
    else:
        target = torch.zeros(len(labels), len(MODALITIES), device=labels.device)
    if keep is not None:
        kept = torch.stack([keep[m] for m in MODALITIES], 1).to(target.dtype)
        target = torch.where((kept.sum(1) < len(MODALITIES))[:, None], kept, target)
    return target


def modality_weight_summary(
    weights: torch.Tensor, labels: torch.Tensor | Sequence, classes: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Mean modality weights per group: ``{group: {"visible": w, "infrared": w, "n": k}, ..., "all": {...}}``.

    ``labels`` are class indices named by ``classes``, or (``classes=None``) group names such as the synthetic
    data's per-sample conditions.
    """
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.ndim != 2 or weights.shape[1] != len(MODALITIES):
        raise FERError(f"modality weights must have shape (N, 2), got {tuple(weights.shape)}")
    keys = [classes[int(k)] for k in labels] if classes is not None else [str(k) for k in labels]
    if len(keys) != len(weights):
        raise FERError(f"{len(keys)} labels for {len(weights)} weight rows")
    groups = list(dict.fromkeys(keys if classes is None else [c for c in classes if c in keys]))
    summary = {}
    for group in [*groups, "all"]:
        rows = weights if group == "all" else weights[torch.tensor([k == group for k in keys])]
        mean = rows.mean(0).tolist()
        summary[group] = {**{m: round(w, 4) for m, w in zip(MODALITIES, mean, strict=True)}, "n": len(rows)}
    return summary
