"""``contact_sheet.png``: a grid of sample pairs per class, so a person can check the pairing by eye."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from fer_lightning.io import atomic_path


def contact_sheet(root: Path, rows: list[dict], path: Path, per_class: int = 6, tile: int = 64) -> None:
    """One row per class: ``per_class`` samples, each shown as visible | infrared side by side, with the face box
    where the rows have one (``<camera>_box``, data/face_crops.py): green where found, orange where mapped from the
    other camera."""
    by_class: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if len(by_class[r["label"]]) < per_class:
            by_class[r["label"]].append(r)
    classes = sorted(by_class)
    label_w, gap = 90, 6
    width = label_w + per_class * (2 * tile + gap)
    sheet = Image.new("RGB", (width, max(1, len(classes)) * (tile + gap) + 16), "white")
    draw = ImageDraw.Draw(sheet)
    faces = any(r.get("face") for r in rows)
    title = "each pair: visible | infrared" + ("; face box: green found, orange mapped" if faces else "")
    draw.text((label_w, 2), title, fill="black")
    for ci, cls in enumerate(classes):
        y = 16 + ci * (tile + gap)
        draw.text((4, y + tile // 2 - 5), cls[:14], fill="black")
        for si, r in enumerate(by_class[cls]):
            x = label_w + si * (2 * tile + gap)
            for k, mod in enumerate(("visible", "infrared")):
                if r.get(mod):
                    try:
                        im = Image.open(root / r[mod]).convert("RGB")
                    except OSError:
                        continue
                    sheet.paste(im.resize((tile, tile)), (x + k * tile, y))
                    _draw_box(draw, r, mod, im.size, (x + k * tile, y), tile)
                else:
                    draw.rectangle((x + k * tile, y, x + (k + 1) * tile - 1, y + tile - 1), outline="gray")
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp)


def _draw_box(draw: ImageDraw.ImageDraw, row: dict, camera: str, size: tuple[int, int], at: tuple[int, int], tile: int):
    text = row.get(f"{camera}_box")
    if not text:
        return
    x0, y0, x1, y1 = (float(v) for v in text.split())
    sx, sy = tile / size[0], tile / size[1]
    box = [at[0] + x0 * sx, at[1] + y0 * sy, at[0] + x1 * sx - 1, at[1] + y1 * sy - 1]
    box = [min(max(v, lo), lo + tile - 1) for v, lo in zip(box, (at[0], at[1]) * 2, strict=True)]
    draw.rectangle(box, outline="orange" if row.get("face") == "mapped" else "lime", width=max(1, tile // 48))
