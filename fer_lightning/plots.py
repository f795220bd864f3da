"""Figures a person reads: confusion matrices and training curves (the contact sheet: data/contact_sheet.py)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def confusion_matrix_figure(cm: list[list[int]], classes: list[str], path: Path, title: str = "") -> None:
    """Counts (left) and row-normalised recall per class (right); rows are true classes."""
    cm = np.asarray(cm)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    size = 2.5 + 0.6 * len(classes)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, data, fmt, label in ((axes[0], cm, "d", "count"), (axes[1], norm, ".2f", "row fraction")):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() if data.max() > 0 else 1)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label)
        for i in range(len(classes)):
            for j in range(len(classes)):
                value = format(data[i, j], fmt)
                ax.text(
                    j, i, value, ha="center", va="center", color="white" if data[i, j] > data.max() / 2 else "black"
                )
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def curves_figure(history: list[dict], path: Path, title: str = "") -> None:
    """Loss (left) and accuracy (right) per epoch; ``history`` rows hold ``epoch`` and ``train/...``, ``val/...``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for stage, style in (("train", "-o"), ("val", "-s")):
            points = [(h["epoch"], h[f"{stage}/{metric}"]) for h in history if h.get(f"{stage}/{metric}") is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label=stage, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)
