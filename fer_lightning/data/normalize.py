"""uint8 images to the network's floats: ``(x / 255 - mean) / std`` per modality, on whatever device they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


class Normalizer:
    """Per-modality normalisation with fixed statistics, as a datamodule computed them or a checkpoint stored them.

    Args:
        stats: ``{modality: (mean[3], std[3])}`` for pixels scaled to [0, 1].
    """

    def __init__(self, stats: Mapping[str, Sequence[Sequence[float]]]):
        self.stats = {m: (list(map(float, v[0])), list(map(float, v[1]))) for m, v in stats.items()}
        self._affine: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _scale_shift(self, modality: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # One fused multiply-add, its tensors kept per device: no host->device copy per batch.
        key = (modality, str(device))
        if key not in self._affine:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in self.stats[modality])
            self._affine[key] = ((1 / (255 * std)).to(device), (-mean / std).to(device))
        return self._affine[key]

    def __call__(self, batch: dict) -> dict:
        """A copy of ``batch`` whose uint8 image entries are normalised floats; other entries unchanged."""
        out = dict(batch)
        for m in self.stats:
            if m in batch and batch[m].dtype == torch.uint8:
                scale, shift = self._scale_shift(m, batch[m].device)
                out[m] = torch.addcmul(shift, batch[m].float(), scale)
        return out
