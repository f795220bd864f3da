"""Mixup (Zhang et al., 2018, "mixup: Beyond Empirical Risk Minimization") for one- and two-camera batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mixup(
    inputs: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float, num_classes: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The batch blended with a shuffled copy of itself by one Beta(alpha, alpha) share: both cameras of a pair
    get the same partner and share, so a fused sample stays one scene.

    Returns:
        The blended inputs, the blended one-hot targets (N, C), and each sample's larger share's label (for the
        training metrics).
    """
    # torch's generator, which StepSeed seeds per step: a resumed run draws the same blends
    share = torch.distributions.Beta(alpha, alpha).sample().item()
    partner = torch.randperm(len(labels), device=labels.device)
    mixed = {m: share * x + (1 - share) * x[partner] for m, x in inputs.items()}
    one_hot = F.one_hot(labels, num_classes).float()
    target = share * one_hot + (1 - share) * one_hot[partner]
    return mixed, target, labels if share >= 0.5 else labels[partner]
