"""The prepared-dataset manifest: one row per sample, and its persisted splits.

``<data_dir>/<dataset>/manifest.csv`` has the columns of the README's schema section (``sample_id, label,
visible, infrared, subject, split``) plus ``fold`` (k-fold index over train+val, empty when unused),
``near_duplicate_group`` (the sample's near-duplicate cluster, empty when it has none; :mod:`.near_duplicates`)
and the SHA-1 of each image file (used by the leakage check and as cache keys). Image paths are relative to the
manifest.
The split settings that produced the ``split`` column are stored in ``split.json`` beside it, so a run never
silently gets another test set: new settings re-split, and checkpoints record the manifest hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fer_lightning.data import near_duplicates
from fer_lightning.data.near_duplicates import COLUMN as NEAR_DUPLICATE_GROUP
from fer_lightning.data.split_drawing import SPLITS, SplitSpec, assign_splits, check_leakage, check_splits
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_bytes, atomic_write_text, file_sha1

COLUMNS = (
    "sample_id",
    "label",
    "visible",
    "infrared",
    "subject",
    "split",
    "fold",
    NEAR_DUPLICATE_GROUP,
    "visible_sha1",
    "infrared_sha1",
)
REQUIRED = COLUMNS[:6]
# Where prepare found the face with the face settings it last prepared (fer_lightning/data/face_crops.py); written
# after COLUMNS, only while faces are on. Not part of the split's identity (manifest_sha1 leaves them out).
FACE_COLUMNS = ("face", "visible_box", "infrared_box")
# The files of a prepared dataset (docs/schemas.md#a-prepared-dataset), beside split.json.
MANIFEST = "manifest.csv"
REJECTED = "rejected.csv"
CONTACT_SHEET = "contact_sheet.png"


def manifest_bytes(rows: Iterable[dict], columns: Sequence[str] = COLUMNS) -> bytes:
    """The manifest file's exact content, so a split held in memory has the sha1 its file would have."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue().encode("utf-8")


def _columns(rows: list[dict]) -> tuple[str, ...]:
    return COLUMNS + FACE_COLUMNS if any(r.get("face") for r in rows) else COLUMNS


def write_manifest(path: Path, rows: Iterable[dict]) -> None:
    """Writes the rows, with their face columns while they have any."""
    rows = list(rows)
    atomic_write_bytes(path, manifest_bytes(rows, _columns(rows)))


def manifest_sha1(path: Path, rows: list[dict]) -> str:
    """The sha1 of the manifest file ``rows`` were read from, as it would be without face columns: preparing other
    face settings rewrites those, and must not make a checkpoint's manifest look changed."""
    if _columns(rows) == COLUMNS:
        return file_sha1(path)
    return hashlib.sha1(manifest_bytes(rows)).hexdigest()


def rejected_text(rejected: Iterable[tuple[str, str]]) -> str:
    """``rejected.csv``: ``file, reason`` for every file found but not used."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "reason"])
    writer.writerows(rejected)
    return buf.getvalue()


def read_manifest(path: Path, allow_unsplit: bool = False) -> list[dict]:
    """The rows of the manifest at ``path``.

    ``allow_unsplit``: rows with an empty ``split`` are accepted (a manifest before its split is drawn).

    Raises:
        FERError: no file, a missing column, an unknown split, or a row with neither image."""
    if not path.is_file():
        raise FERError(f"{path}: no manifest; prepare the dataset first (python -m fer_lightning.prepare)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise FERError(f"{path}: missing column(s) {missing}; delete it and prepare the dataset again")
        rows = list(reader)
    for i, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS and not (allow_unsplit and row["split"] == ""):
            raise FERError(f"{path}:{i}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        if not row["visible"] and not row["infrared"]:
            raise FERError(f"{path}:{i}: sample {row['sample_id']!r} has neither a visible nor an infrared image")
    return rows


def split_state(manifest_dir: Path) -> dict | None:
    """The dataset's ``split.json`` (how its split was drawn), or None when it has none yet."""
    path = manifest_dir / "split.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _draw_splits(manifest_dir: Path, rows: list[dict], spec: SplitSpec) -> list[dict]:
    """``rows`` split by ``spec`` with their near-duplicate clusters, checked (trainable, no leakage); reads image
    files only to hash them."""
    for r in rows:
        for mod in ("visible", "infrared"):
            if r[mod] and not r.get(f"{mod}_sha1"):
                r[f"{mod}_sha1"] = file_sha1(manifest_dir / r[mod])
    rows = assign_splits(near_duplicates.with_clusters(manifest_dir, rows), spec)
    check_splits(rows, spec)
    check_leakage(rows)
    return rows


def _prepared(manifest_dir: Path, spec: SplitSpec) -> tuple[list[dict], dict | None, bool]:
    """The manifest's rows, the settings in split.json, and whether those rows are split as ``spec`` says.

    Under ``group`` a manifest written before near-duplicates were checked is not current: its split may cut
    clusters."""
    rows = read_manifest(manifest_dir / MANIFEST, allow_unsplit=True)
    state = split_state(manifest_dir)
    have_clusters = bool(rows) and NEAR_DUPLICATE_GROUP in rows[0]
    current = state == spec.to_json() and all(r["split"] for r in rows)
    return rows, state, current and (have_clusters or spec.near_duplicates != "group")


def _with_clusters(manifest_dir: Path, rows: list[dict], spec: SplitSpec) -> list[dict]:
    """The rows with their near-duplicate cluster: from the manifest or, for a manifest written before
    near-duplicates were checked (kept as it is while its split is reused), computed now; with ``off``, not at all."""
    if (rows and NEAR_DUPLICATE_GROUP in rows[0]) or spec.near_duplicates == "off":
        return rows
    return near_duplicates.with_clusters(manifest_dir, rows)


def ensure_splits(manifest_dir: Path, spec: SplitSpec, log=print) -> list[dict]:
    """Makes the manifest's splits match ``spec``: reused when they already do, re-drawn (and said) when not."""
    path = manifest_dir / MANIFEST
    rows, state, current = _prepared(manifest_dir, spec)
    if current:
        return _with_clusters(manifest_dir, rows, spec)
    rows = _draw_splits(manifest_dir, rows, spec)
    if state is not None:
        log(f"split settings changed ({state} -> {spec.to_json()}): re-drawing the splits of {path}")
    write_manifest(path, rows)
    atomic_write_text(manifest_dir / "split.json", json.dumps(spec.to_json(), indent=2) + "\n")
    return rows


@dataclass(frozen=True)
class ReadSplit:
    """A split read without writing: the rows, the sha1 their manifest file has (or would have), where they came
    from (``prepared``: the manifest as it is; ``recomputed``: drawn in memory by ``spec``) and the prepared
    split settings (split.json) they differ from."""

    rows: list[dict]
    manifest_sha1: str
    source: str
    prepared: dict | None


def read_splits(manifest_dir: Path, spec: SplitSpec) -> ReadSplit:
    """The manifest split by ``spec`` without changing the prepared files: evaluating a checkpoint of another
    split leaves another user's prepared split as it is."""
    rows, state, current = _prepared(manifest_dir, spec)
    if current:
        rows = _with_clusters(manifest_dir, rows, spec)
        return ReadSplit(rows, manifest_sha1(manifest_dir / MANIFEST, rows), "prepared", state)
    rows = _draw_splits(manifest_dir, rows, spec)
    return ReadSplit(rows, hashlib.sha1(manifest_bytes(rows)).hexdigest(), "recomputed", state)
