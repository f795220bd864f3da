"""A user's own images: ``<root>/visible/<Class>/**`` and/or ``<root>/infrared/<Class>/**``."""

from __future__ import annotations

from pathlib import Path

from fer_lightning.data.extract import skip_reason
from fer_lightning.data.pairing import natural_key
from fer_lightning.data.sources import Sources
from fer_lightning.errors import FERError
from fer_lightning.modalities import CAMERAS


def folder_sources(root: Path) -> Sources:
    """Sources from ``root/visible/<Class>/**`` and ``root/infrared/<Class>/**`` (any extension case)."""
    layout = "DIR/visible/<Class>/* and/or DIR/infrared/<Class>/*"
    if not root.is_dir():
        raise FERError(f"dataset.root={root}: no such folder; point it at a folder laid out as {layout}")
    found = {c.name.lower(): c for c in root.iterdir() if c.is_dir() and c.name.lower() in CAMERAS}
    # visible first: its class-folder spelling names the class when the two differ in case
    modality_dirs = {m: found[m] for m in CAMERAS if m in found}
    if not modality_dirs:
        raise FERError(f"dataset.root={root}: has neither a visible/ nor an infrared/ folder; lay it out as {layout}")
    images: dict[str, dict[str, list[Path]]] = {m: {} for m in CAMERAS}
    spelling: dict[str, str] = {}  # class folders match across modalities whatever their case
    rejected = []
    warnings = []
    for modality, folder in modality_dirs.items():
        for path in sorted(folder.rglob("*"), key=natural_key):
            if path.is_dir():
                continue
            parts = path.relative_to(folder).parts
            reason = "not in a class folder" if len(parts) == 1 else skip_reason(parts)
            if reason is None and path.stat().st_size == 0:
                reason = "empty file"
            if reason is not None:
                rejected.append((path.as_posix(), reason))
                continue
            label = spelling.setdefault(parts[0].casefold(), parts[0])
            images[modality].setdefault(label, []).append(path)
        warnings += _empty_class_folders(folder, images[modality])
    if not any(images[m] for m in CAMERAS):
        raise FERError(f"dataset.root={root}: no images found; lay it out as {layout}")
    return Sources(images, root, rejected, warnings, description=f"folder {root}")


def _empty_class_folders(folder: Path, found: dict[str, list[Path]]) -> list[str]:
    used = {label.casefold() for label in found}
    return [
        f"{class_dir}: class folder holds no image; class {class_dir.name!r} is left out"
        for class_dir in sorted(folder.iterdir(), key=natural_key)
        if class_dir.is_dir() and class_dir.name.casefold() not in used
    ]
