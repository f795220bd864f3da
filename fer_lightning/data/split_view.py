"""One split of a set-up datamodule served as test data: what ``Run.test`` hands the trainer, so the datamodule
itself is never re-pointed at another split or batch transform."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader

from fer_lightning.data.datamodule import ManifestDataModule


class SplitView(L.LightningDataModule):
    """``data``'s ``split`` as the test set; ``batch_transform`` (robustness corruptions) runs on each uint8 batch
    on the device before ``data`` normalises it."""

    def __init__(
        self, data: ManifestDataModule, split: str = "test", batch_transform: Callable[[dict], dict] | None = None
    ):
        super().__init__()
        self.data, self.split, self.batch_transform = data, split, batch_transform

    def test_dataloader(self) -> DataLoader:
        return self.data.eval_dataloader(self.split)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.batch_transform is not None:
            batch = self.batch_transform(batch)
        return self.data.normalize(batch)
