"""Test batches with one modality corrupted or missing: what a failing camera does to a trained model.

:class:`BatchCorruption` runs on each uint8 batch after it reaches the device and before normalisation
(the ``batch_transform`` of :class:`~fer_lightning.data.split_view.SplitView`), per sample, seeded by the sample's
index, so a corruption is the same bytes whatever the batch size or device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fer_lightning.data.corruptions import check, check_missing, corrupt, sample_seed
from fer_lightning.errors import FERError
from fer_lightning.modalities import CAMERAS


@dataclass(frozen=True)
class CorruptionSpec:
    """One modality corrupted (``corrupt.visible`` / ``corrupt.infrared``: a kind) or ``missing``, per seed."""

    visible: str | None = None
    infrared: str | None = None
    severity: int = 3
    seed: int = 0
    missing: str | None = None

    def __post_init__(self):
        for m in CAMERAS:
            if getattr(self, m) is not None:
                check(getattr(self, m), self.severity, key=f"corrupt.{m}")
        check_missing(self.missing)
        if self.missing is not None and getattr(self, self.missing) is not None:
            raise FERError(f"missing={self.missing} and corrupt.{self.missing}: choose one of the two")

    @classmethod
    def from_config(cls, cfg: DictConfig) -> CorruptionSpec:
        node = OmegaConf.to_container(cfg.get("corrupt") or {}, resolve=True)
        unknown = set(node) - {"visible", "infrared", "severity", "seed"}
        if unknown:
            raise FERError(
                f"corrupt.{sorted(unknown)[0]}: unknown key; use corrupt.visible, .infrared, .severity, .seed"
            )
        missing = cfg.get("missing")
        return cls(**{k: v for k, v in node.items() if v is not None}, missing=check_missing(missing))

    @property
    def active(self) -> bool:
        return self.missing is not None or any(getattr(self, m) for m in CAMERAS)

    def record(self) -> dict | None:
        """What results.json says about it (None for clean data)."""
        return asdict(self) if self.active else None


class BatchCorruption:
    """Corrupts (or drops) one modality of every sample of a batch dict of uint8 (N, 3, H, W) images."""

    def __init__(self, spec: CorruptionSpec):
        self.spec = spec

    def __call__(self, batch: dict) -> dict:
        out = dict(batch)
        if self.spec.missing is not None:
            out.pop(self.spec.missing, None)
        for m in CAMERAS:
            kind = getattr(self.spec, m)
            if kind is None or m not in batch:
                continue
            images = batch[m]
            if images.dtype != torch.uint8:
                raise FERError(f"corrupt.{m}: images reach the corruption already normalised; this is a bug")
            hwc = images.permute(0, 2, 3, 1).cpu().numpy()
            done = [
                corrupt(np.ascontiguousarray(img), kind, self.spec.severity, sample_seed(self.spec.seed, int(i)))
                for img, i in zip(hwc, batch["index"].tolist(), strict=True)
            ]
            out[m] = torch.from_numpy(np.stack(done)).permute(0, 3, 1, 2).contiguous().to(images.device)
        return out
