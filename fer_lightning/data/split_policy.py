"""Which manifest rows a run serves, and in which split."""

from __future__ import annotations

from pathlib import Path

from fer_lightning.data.split_drawing import SPLITS
from fer_lightning.data.summary import unpaired_message
from fer_lightning.errors import FERError
from fer_lightning.modalities import cameras


class SplitPolicy:
    """The rows with every image ``modality`` needs, their classes (``dataset.classes`` or the sorted labels found)
    and one non-empty set of rows per split; anything else is refused naming ``manifest_path``."""

    def __init__(self, modality: str, configured_classes: list[str] | None, manifest_path: Path):
        self.modality = modality
        self.modalities = cameras(modality)
        self.configured_classes = configured_classes
        self.manifest_path = manifest_path

    def classes(self, rows: list[dict]) -> list[str]:
        found = sorted({r["label"] for r in rows})
        if self.configured_classes is None:
            return found
        unknown = [c for c in found if c not in self.configured_classes]
        if unknown:
            raise FERError(
                f"{self.manifest_path}: unknown class(es) {unknown}; expected "
                f"{self.configured_classes} (dataset.classes)"
            )
        return self.configured_classes

    def usable(self, rows: list[dict]) -> list[dict]:
        """The rows with every image this modality needs; refuses none, a single class, or unpaired fusion rows."""
        usable = [r for r in rows if all(r[m] for m in self.modalities)]
        if not usable:
            raise FERError(
                f"{self.manifest_path}: no sample has {' and '.join(self.modalities)} images; try another modality"
            )
        found = sorted({r["label"] for r in usable})
        if len(found) < 2:
            raise FERError(
                f"{self.manifest_path}: every {' and '.join(self.modalities)} sample is of class {found[0]!r}, and "
                "a classifier needs at least 2 classes; add images of another class and prepare again"
            )
        if len(usable) < len(rows) and self.modality == "fusion":
            raise FERError(unpaired_message(self.manifest_path, rows))
        return usable

    def by_split(self, rows: list[dict]) -> dict[str, list[dict]]:
        """The usable rows of each split, in manifest order."""
        by_split = {s: [r for r in self.usable(rows) if r["split"] == s] for s in SPLITS}
        for s, split_rows in by_split.items():
            if not split_rows:
                raise FERError(
                    f"{self.manifest_path}: the {s} split is empty for modality={self.modality}; "
                    "add data or change dataset.split"
                )
        return by_split
