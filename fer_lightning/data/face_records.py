"""What a person reads of the faces prepare found, for the settings prepared last: the manifest's face columns,
rejected.csv's "no face found" rows, prepare.json's ``faces`` entry and the boxes on the contact sheet
(docs/faces.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fer_lightning.data.contact_sheet import contact_sheet
from fer_lightning.data.face_crops import NO_FACE, STATE, FaceTable
from fer_lightning.data.manifest import (
    CONTACT_SHEET,
    FACE_COLUMNS,
    MANIFEST,
    REJECTED,
    read_manifest,
    rejected_text,
    write_manifest,
)
from fer_lightning.data.pairing import natural_key
from fer_lightning.io import atomic_write_text
from fer_lightning.modalities import cameras


def face_rejections(root: Path) -> list[tuple[str, str]]:
    """The rows of ``rejected.csv`` that the face settings prepared last put there."""
    try:
        with open(root / REJECTED, newline="") as f:
            return [(r["file"], r["reason"]) for r in csv.DictReader(f) if r["reason"].startswith(NO_FACE)]
    except (OSError, KeyError):
        return []


def show(root: Path, table: FaceTable | None) -> None:
    """Makes the manifest's face columns, rejected.csv's face rows, prepare.json's ``faces`` entry and the contact
    sheet show ``table`` (faces off: none of them); writes only what changes. The caller holds the data lock."""
    path = root / MANIFEST
    rows = read_manifest(path, allow_unsplit=True)
    new = [{**r, **_face_columns(table, r)} for r in rows]
    if any(r.get(k, "") != n.get(k, "") for r, n in zip(rows, new, strict=True) for k in FACE_COLUMNS):
        write_manifest(path, new)
        contact_sheet(root, new, root / CONTACT_SHEET)
    _show_rejected(root, [] if table is None else _rejections(table, rows))
    _show_state(root / STATE, table)


def _face_columns(table: FaceTable | None, row: dict) -> dict:
    if table is None:
        return dict.fromkeys(FACE_COLUMNS, "")
    face = table.rows.get(row["sample_id"], {})
    return {k: face.get(k, "") for k in FACE_COLUMNS}


def _rejections(table: FaceTable, rows: list[dict]) -> list[tuple[str, str]]:
    cams = cameras(table.modality)
    where = " or ".join(cams)
    reason = f"{NO_FACE} in {where} (faces.missing=reject, faces {table.name})"
    return [(r[m], reason) for r in rows if table.status(r["sample_id"]) == "rejected" for m in cams if r.get(m)]


def _show_rejected(root: Path, face_rows: list[tuple[str, str]]) -> None:
    path = root / REJECTED
    try:
        with open(path, newline="") as f:
            old = [(r["file"], r["reason"]) for r in csv.DictReader(f)]
    except (OSError, KeyError):
        old = []
    rows = sorted([r for r in old if not r[1].startswith(NO_FACE)] + face_rows, key=lambda r: natural_key(r[0]))
    if rows != old:
        atomic_write_text(path, rejected_text(rows))


def _show_state(path: Path, table: FaceTable | None) -> None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    # faces off on a dataset never prepared with them: prepare.json stays as it is
    if isinstance(state, dict) and (table is not None or "faces" in state):
        prepared = dict((state.get("faces") or {}).get("prepared") or {})
        if table is not None:
            prepared[table.name] = {k: v for k, v in table.record().items() if k != "name"}
        new = {"current": table.name if table is not None else "none", "prepared": prepared}
        if state.get("faces") != new:
            state["faces"] = new
            atomic_write_text(path, json.dumps(state, indent=2) + "\n")
