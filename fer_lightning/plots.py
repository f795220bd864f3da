"""Figures a person reads: confusion matrices and training curves (the contact sheet: data/contact_sheet.py)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fer_lightning.io import atomic_path


def _save(fig, path: Path) -> None:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


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


def robustness_figure(rows: list[dict], path: Path) -> None:
    """Accuracy against severity: a panel per corruption kind, a line per model and corrupted modality.

    ``rows``: dicts with ``model, modality, kind, severity, accuracy``; severity-0 rows (clean data) start every
    line.
    """
    kinds = sorted({r["kind"] for r in rows if r["kind"] not in ("none", "missing")})
    clean = {r["model"]: r["accuracy"] for r in rows if r["kind"] == "none"}
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(3.2 * max(len(kinds), 1), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=False):
        lines: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for r in rows:
            if r["kind"] == kind:
                lines[(r["model"], r["modality"])].append((int(r["severity"]), float(r["accuracy"])))
        for (model, modality), points in sorted(lines.items()):
            points = sorted([(0, clean[model]), *points]) if model in clean else sorted(points)
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=f"{model} ({modality} corrupted)")
        ax.set_title(kind)
        ax.set_xlabel("severity")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    _save(fig, path)


def reliability_figure(bins: dict[str, list], path: Path, title: str = "") -> None:
    """The reliability diagram: accuracy against mean confidence per confidence bin (above; the diagonal is perfect
    calibration, the red part of a bar its gap), and how many predictions fell in each bin (below, numbered)."""
    edges = np.asarray(bins["edges"])
    count = np.asarray(bins["count"])
    acc = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
    conf = np.nan_to_num(np.asarray(bins["confidence"], dtype=float))
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    filled = count > 0
    top.bar(centres[filled], acc[filled], width[filled], edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(
        centres[filled],
        conf[filled] - acc[filled],
        width[filled],
        bottom=acc[filled],
        color="tab:red",
        alpha=0.35,
        edgecolor="tab:red",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centres, count, width, edgecolor="black", color="grey")
    for x, c in zip(centres, count, strict=True):
        if c:
            bottom.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=7)
    bottom.set_ylim(0, max(int(count.max()), 1) * 1.25)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("count")
    if title:
        top.set_title(title)
    _save(fig, path)
