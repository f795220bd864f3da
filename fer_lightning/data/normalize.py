"""Input normalisation: each modality's (mean, std), and uint8 batches turned into normalised floats on the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fer_lightning.errors import FERError

IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
NORMALIZATIONS = ("imagenet", "dataset", "none")
Stats = tuple[list[float], list[float]]


def modality_stats(normalization: str, images: Sequence[np.ndarray]) -> Stats:
    """``none``: inputs stay in [0, 1], as the study fed them; ``imagenet``; ``dataset``: the mean and std of
    ``images`` (uint8 HWC; the train split's)."""
    if normalization == "none":
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if normalization == "imagenet":
        return IMAGENET_STATS
    # Per-image sums in float64: one image at a time, never the whole split as floats.
    total, sq, n = np.zeros(3), np.zeros(3), 0
    for i in range(len(images)):
        px = images[i].reshape(-1, 3).astype(np.float64) / 255
        total += px.sum(0)
        sq += (px * px).sum(0)
        n += len(px)
    mean = total / n
    return mean.tolist(), np.maximum(np.sqrt(np.maximum(sq / n - mean * mean, 0)), 1e-3).tolist()


class Normalizer:
    """uint8 images -> float, scaled to [0, 1] and normalised with each modality's (mean, std)."""

    def __init__(self):
        self._affine: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch: dict, stats: dict[str, Stats]) -> dict:
        out = dict(batch)
        for m, (mean, std) in stats.items():
            if m in batch and batch[m].dtype == torch.uint8:
                scale, shift = self._scale_shift(mean, std, batch[m].device)
                out[m] = torch.addcmul(shift, batch[m].float(), scale)
        return out

    def _scale_shift(self, mean: list[float], std: list[float], device: torch.device):
        # (x/255 - mean)/std as one fused multiply-add, kept per device: no host->device copy per batch.
        key = (str(device), tuple(mean), tuple(std))
        if key not in self._affine:
            m, s = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (mean, std))
            self._affine[key] = ((1 / (255 * s)).to(device), (-m / s).to(device))
        return self._affine[key]


class InputNormalization:
    """``dataset.normalization`` for ``modalities``: their statistics, fitted on the train split's images or
    restored from a checkpoint, applied to uint8 batches."""

    def __init__(self, method: str, modalities: Sequence[str]):
        if method not in NORMALIZATIONS:
            raise FERError(f"dataset.normalization={method!r}: use one of {', '.join(NORMALIZATIONS)}")
        self.method, self.modalities = method, tuple(modalities)
        self.stats: dict[str, Stats] = {}
        self._normalizer = Normalizer()

    def fit(self, train_images: Mapping[str, Sequence[np.ndarray]]) -> None:
        self.stats = {m: modality_stats(self.method, train_images[m]) for m in self.modalities}

    def restore(self, stats: Mapping[str, Sequence]) -> None:
        self.stats = {m: tuple(v) for m, v in stats.items()}

    def __call__(self, batch: dict) -> dict:
        """uint8 images -> float, scaled to [0, 1] and normalised with each modality's statistics."""
        return self._normalizer(batch, {m: self.stats[m] for m in self.modalities})
