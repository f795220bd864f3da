"""The study's model as the tests check it: its heads as layer sequences (docs/study.md)."""

from __future__ import annotations

from torch import nn

# The study's heads (docs/study.md), as layer sequences of the built model.
STUDY_HEADS = {
    "visible": [("Dropout", 0.4), ("Linear", 512, 256), ("Dropout", 0.4), ("Linear", 256, "C")],
    "infrared": [
        ("Dropout", 0.7),
        ("Linear", 512, 256),
        ("ReLU",),
        ("BatchNorm1d", 256),
        ("Dropout", 0.8),
        ("Linear", 256, "C"),
    ],
    "fusion": [
        ("Dropout", 0.2),
        ("Linear", 1024, 256),
        ("ReLU",),
        ("BatchNorm1d", 256),
        ("Dropout", 0.2),
        ("Linear", 256, "C"),
        ("Dropout", 0.2),
    ],
}


def describe(head: nn.Sequential, classes: int) -> list[tuple]:
    """``head``'s layers as tuples; a Linear to ``classes`` outputs reads ``"C"``."""
    out = []
    for layer in head:
        name = type(layer).__name__
        if isinstance(layer, nn.Dropout):
            out.append((name, layer.p))
        elif isinstance(layer, nn.Linear):
            out.append((name, layer.in_features, "C" if layer.out_features == classes else layer.out_features))
        elif isinstance(layer, nn.BatchNorm1d):
            out.append((name, layer.num_features))
        else:
            out.append((name,))
    return out
