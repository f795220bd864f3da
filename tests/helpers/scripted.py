"""A LightningModule that logs scripted validation scores, for checkpoint and progress tests that need no data."""

from __future__ import annotations

import lightning as L
import torch

# val/accuracy ties at epochs 1, 3 and 4; val/loss is lowest among them at epoch 3
ACCURACY = [0.5, 0.7, 0.6, 0.7, 0.7]
LOSS = [1.0, 0.8, 0.9, 0.75, 0.78]


class Scripted(L.LightningModule):
    """Logs the scripted validation scores of each epoch; trains one parameter on a constant."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/accuracy", ACCURACY[self.current_epoch])
        self.log("val/loss", LOSS[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)

    val_dataloader = train_dataloader
