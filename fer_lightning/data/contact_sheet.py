"""``contact_sheet.png``: a grid of sample pairs per class, so a person can check the pairing by eye."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from fer_lightning.io import atomic_path


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
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp)
