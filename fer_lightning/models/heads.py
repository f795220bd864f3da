"""Classifier heads (the fusion networks are in :mod:`fer_lightning.models.fusion`).

One head builder covers the study's three heads (its values live in ``conf/model/``):

- visible:  Dropout(0.4), Linear(512,256), Dropout(0.4), Linear(256,C)
- infrared: Dropout(0.7), Linear(512,256), ReLU, BatchNorm1d(256), Dropout(0.8), Linear(256,C)
- fusion:   Dropout(0.2), Linear(1024,256), ReLU, BatchNorm1d(256), Dropout(0.2), Linear(256,C), Dropout(0.2)
"""

from __future__ import annotations

from torch import nn

from fer_lightning.errors import FERError


def build_head(
    in_features: int,
    num_classes: int,
    hidden: int = 256,
    dropout_in: float = 0.0,
    activation: str | None = None,
    batchnorm: bool = False,
    dropout_hidden: float = 0.0,
    dropout_out: float = 0.0,
) -> nn.Sequential:
    """Dropout -> Linear -> [activation] -> [BatchNorm] -> Dropout -> Linear -> [Dropout].

    ``dropout_out`` drops logits, as the study's fusion head did; keep it 0 outside the paper presets.
    """
    layers: list[nn.Module] = [nn.Dropout(dropout_in), nn.Linear(in_features, hidden)]
    if activation == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif activation not in (None, "none"):
        raise FERError(f"unknown head activation {activation!r}: use relu or null")
    if batchnorm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.Dropout(dropout_hidden), nn.Linear(hidden, num_classes)]
    if dropout_out:
        layers.append(nn.Dropout(dropout_out))
    return nn.Sequential(*layers)
