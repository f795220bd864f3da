"""Build a prepared dataset (manifest.csv, rejected.csv, contact_sheet.png) from the images of a source.

The images stay where they are (the manifest points at the extracted or user files, relative to the manifest);
only high-bit-depth images (16-bit thermal TIFFs) are written again, as 8-bit PNGs under ``converted/``, with
``dataset.sixteen_bit`` deciding the intensity mapping, so training, the contact sheet and the content hashes
all see the same pixels. Every image is decoded once to catch corrupt files (:mod:`.scan`), so a second run
decodes nothing and rewrites nothing when nothing changed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fer_lightning.data.contact_sheet import contact_sheet
from fer_lightning.data.face_records import face_rejections
from fer_lightning.data.images import _HIGH_BIT_MODES, load_rgb
from fer_lightning.data.manifest import CONTACT_SHEET, MANIFEST, REJECTED, read_manifest, rejected_text, write_manifest
from fer_lightning.data.pairing import PAIRING, PAIRING_KEY, PairRow, natural_key, pair_files
from fer_lightning.data.scan import SCAN_CACHE, ScanCache
from fer_lightning.data.sources import Sources
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_path, atomic_write_text, file_sha1, remove_stale_temporaries
from fer_lightning.modalities import CAMERAS
from fer_lightning.validation import Choice

log = logging.getLogger(__name__)

STATE = "prepare.json"
CONVERTED = "converted"
SIXTEEN_BIT_MODES = ("minmax", "fixed")
# The columns that identify the samples; split and fold are drawn afterwards by manifest.ensure_splits, which
# also fills subject from dataset.split.group_regex.
_SAMPLE_KEY = ("sample_id", "label", "visible", "infrared", "visible_sha1", "infrared_sha1")

Rejected = list[tuple[str, str]]


@dataclass(frozen=True)
class ImageOptions:
    """How images are paired and converted (``dataset.pairing``, ``dataset.sixteen_bit[_range]``)."""

    pairing: str = "auto"
    sixteen_bit: str = "minmax"
    sixteen_bit_range: tuple[float, float] = (0, 65535)

    def __post_init__(self) -> None:
        PAIRING.check(PAIRING_KEY, self.pairing)
        Choice(SIXTEEN_BIT_MODES).check("dataset.sixteen_bit", self.sixteen_bit)
        lo, hi = self.sixteen_bit_range
        if not hi > lo:
            raise FERError(f"dataset.sixteen_bit_range={[lo, hi]}: need [low, high] with high > low")

    def to_json(self) -> dict:
        return {
            "pairing": self.pairing,
            "sixteen_bit": self.sixteen_bit,
            "sixteen_bit_range": [float(v) for v in self.sixteen_bit_range],
        }


def build(root: Path, sources: Sources, options: ImageOptions) -> None:
    """Checks, pairs and writes ``root/manifest.csv``, ``rejected.csv``, ``prepare.json`` and ``contact_sheet.png``.

    Unpaired images stay in the manifest as single-modality rows (single-modality runs use them; the summary
    counts them). An image identical in content to an earlier one is dropped with its partner, so the leakage
    check of the split cannot fail on the published data. Files are only rewritten when their content changes.
    Split columns are left empty for ``manifest.ensure_splits``.

    Raises:
        FERError: no readable image, a single class, or a pairing error (``dataset.pairing=strict``, ambiguous
            names).
    """
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root / CONVERTED, recursive=True)
    rejected, warnings = list(sources.rejected), list(sources.warnings)
    cache = ScanCache(root / SCAN_CACHE)
    try:
        scanned, readable = _check_images(root, sources, cache, rejected)
        pairing = pair_files(readable["visible"], readable["infrared"], mode=options.pairing, require_pairs=False)
        warnings += pairing.warnings
        pairs, conflicts = _drop_duplicates(root, pairing.pairs, scanned, rejected)
        rows = [_row(root, sources.base, pair, scanned, cache, options) for pair in pairs]
    finally:
        cache.save()
    _check_classes(sources, rows)
    if conflicts:
        warnings.append(
            f"{len(conflicts)} image(s) have the same content as an image of another class, e.g. {conflicts[0]}; "
            "the later copies are dropped (see rejected.csv)"
        )
    changed = _write_manifest_if_changed(root / MANIFEST, rows)
    _write_rejected(root, rejected)
    state = {"source": sources.description, "options": options.to_json(), "warnings": warnings}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        # the near-duplicate counts and the faces' records, written after the split (data/face_crops.py)
        old = json.loads((root / STATE).read_text())
        state.update({k: old[k] for k in ("near_duplicates", "faces") if k in old})
    _write_if_changed(root / STATE, json.dumps(state, indent=2) + "\n")
    if changed or not (root / CONTACT_SHEET).is_file():
        contact_sheet(root, rows, root / CONTACT_SHEET)
    for w in warnings:
        log.warning(w)


def _check_images(
    root: Path, sources: Sources, cache: ScanCache, rejected: Rejected
) -> tuple[dict[Path, dict], dict[str, dict[str, list[Path]]]]:
    """Scans every image; unreadable ones go to ``rejected``. Returns the scan entries and the readable images."""
    files = [p for m in CAMERAS for paths in sources.images.get(m, {}).values() for p in paths]
    scanned = cache.scan(files)
    readable: dict[str, dict[str, list[Path]]] = {m: {} for m in CAMERAS}
    for m in CAMERAS:
        for label, paths in sources.images.get(m, {}).items():
            for p in paths:
                if scanned[p]["error"] is not None:
                    rejected.append((_shown(p, root), f"unreadable image ({scanned[p]['error']})"))
                else:
                    readable[m].setdefault(label, []).append(p)
    if not any(readable[m] for m in CAMERAS):
        _write_rejected(root, rejected)
        raise FERError(f"{sources.description or sources.base}: no readable image; see {root / REJECTED}")
    return scanned, readable


def _drop_duplicates(
    root: Path, pairs: list[PairRow], scanned: dict[Path, dict], rejected: Rejected
) -> tuple[list[PairRow], list[str]]:
    """Keeps the first pair of each image content; returns the kept pairs and the cross-class conflicts."""
    kept: list[PairRow] = []
    first_of: dict[str, tuple[str, str]] = {}  # content sha1 -> (file, label) of the first image with it
    conflicts: list[str] = []  # the same image under two labels
    for label, vis, ir in pairs:
        files = [p for p in (vis, ir) if p is not None]
        dup = next((first_of[scanned[p]["sha1"]] for p in files if scanned[p]["sha1"] in first_of), None)
        if dup is None:
            for p in files:
                first_of[scanned[p]["sha1"]] = (_shown(p, root), label)
            kept.append((label, vis, ir))
            continue
        for p in files:
            first = first_of.get(scanned[p]["sha1"])
            reason = (
                f"duplicate content (same as {first[0]}, class {first[1]})"
                if first
                else "partner of a duplicate image (fusion needs both)"
            )
            rejected.append((_shown(p, root), reason))
        if dup[1] != label:
            conflicts.append(f"{_shown(files[0], root)} ({label}) = {dup[0]} ({dup[1]})")
    return kept, conflicts


def _row(
    root: Path, base: Path, pair: PairRow, scanned: dict[Path, dict], cache: ScanCache, options: ImageOptions
) -> dict:
    """The manifest row of one pair (or single image), converting a high-bit image to the 8-bit PNG it trains on."""
    label, vis, ir = pair
    sides = [(m, p) for m, p in (("visible", vis), ("infrared", ir)) if p is not None]
    row = {"sample_id": _relative(sides[0][1], base), "label": label, "subject": "", "split": "", "fold": ""}
    for m in CAMERAS:
        row[m], row[f"{m}_sha1"] = "", ""
    for m, p in sides:
        entry = scanned[p]
        target, digest = p, entry["sha1"]
        if entry["mode"] in _HIGH_BIT_MODES:
            target = root / CONVERTED / (_relative(p, base) + ".png")
            cache.dirty |= _convert(p, target, entry, options)
            digest = entry["converted"]["sha1"]
        row[m], row[f"{m}_sha1"] = _relative(target, root), digest
    return row


def _check_classes(sources: Sources, rows: list[dict]) -> None:
    labels = sorted({r["label"] for r in rows})
    if len(labels) < 2:
        raise FERError(
            f"{sources.description or sources.base}: only class {labels[0]!r} has usable images, and a classifier "
            "needs at least 2 classes; add a folder of images per class"
        )


def _convert(path: Path, dest: Path, entry: dict, options: ImageOptions) -> bool:
    """Writes the 8-bit PNG of a high-bit image unless the current one is there; returns whether it wrote."""
    settings = [options.sixteen_bit, *options.sixteen_bit_range]
    done = entry.get("converted")
    if done and done.get("settings") == settings and dest.is_file() and file_sha1(dest) == done.get("sha1"):
        return False
    pixels = load_rgb(path, sixteen_bit=options.sixteen_bit, fixed_range=tuple(options.sixteen_bit_range))
    with atomic_path(dest, suffix=".png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    entry["converted"] = {"settings": settings, "sha1": file_sha1(dest)}
    return True


def _write_manifest_if_changed(manifest: Path, rows: list[dict]) -> bool:
    """Writes the rows unless the manifest already holds these samples; a change is said, as it re-splits."""
    try:
        old = read_manifest(manifest, allow_unsplit=True) if manifest.is_file() else None
    except FERError:
        old = None
    if old is not None and _sample_key(old) == _sample_key(rows):
        return False
    if old is not None:
        added = len(set(_sample_key(rows)) - set(_sample_key(old)))
        removed = len(set(_sample_key(old)) - set(_sample_key(rows)))
        log.warning(
            "%s: the samples changed (%d added, %d removed or changed): the splits are drawn again, "
            "so runs trained before this one may have used a different test set",
            manifest,
            added,
            removed,
        )
    write_manifest(manifest, rows)
    return True


def _write_rejected(root: Path, rejected: Rejected) -> None:
    # the face settings' rows stay until they are prepared again (data/face_crops.py)
    rejected = rejected + face_rejections(root)
    _write_if_changed(root / REJECTED, rejected_text(sorted(rejected, key=lambda r: natural_key(r[0]))))


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    atomic_write_text(path, text)
    return True


def _sample_key(rows: Iterable[dict]) -> list[tuple]:
    return [tuple(r.get(k) or "" for k in _SAMPLE_KEY) for r in rows]


def _relative(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive (Windows): an absolute path still resolves from the manifest
        return path.as_posix()


def _shown(path: Path, root: Path) -> str:
    """How rejected.csv names a file: relative to the manifest inside the prepared folder, else absolute."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
