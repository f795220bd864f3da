"""Figures a person reads: confusion matrices and contact sheets of visible/infrared pairs."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw


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


def contact_sheet(root: Path, rows: list[dict], path: Path, per_class: int = 6, tile: int = 64) -> None:
    """One row per class: ``per_class`` samples, each shown as visible | infrared side by side."""
    by_class: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if len(by_class[r["label"]]) < per_class:
            by_class[r["label"]].append(r)
    classes = sorted(by_class)
    label_w, gap = 90, 6
    width = label_w + per_class * (2 * tile + gap)
    sheet = Image.new("RGB", (width, max(1, len(classes)) * (tile + gap) + 16), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((label_w, 2), "each pair: visible | infrared", fill="black")
    for ci, cls in enumerate(classes):
        y = 16 + ci * (tile + gap)
        draw.text((4, y + tile // 2 - 5), cls[:14], fill="black")
        for si, r in enumerate(by_class[cls]):
            x = label_w + si * (2 * tile + gap)
            for k, mod in enumerate(("visible", "infrared")):
                if r.get(mod):
                    try:
                        im = Image.open(root / r[mod]).convert("RGB").resize((tile, tile))
                    except OSError:
                        continue
                    sheet.paste(im, (x + k * tile, y))
                else:
                    draw.rectangle((x + k * tile, y, x + (k + 1) * tile - 1, y + tile - 1), outline="gray")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    sheet.save(tmp)
    os.replace(tmp, path)


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
