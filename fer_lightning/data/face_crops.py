"""Faces in a prepared dataset: where each camera found the face, per face settings, and the crops the cache keeps.

Detection runs once per face settings and modality, over every sample of the manifest (whatever its split), into
``faces/<FaceSettings.key()>-<modality>.csv`` with a ``.json`` sidecar under the prepared dataset, written under
the data lock, each through a temporary name and a rename, the sidecar last:

- ``fusion``: each camera is searched; the visible->infrared transform is estimated from the pairs where both
  cameras found a face (``faces.transform`` replaces it), then a face one camera found is mapped into the other.
- ``visible`` / ``infrared``: only that camera is searched.

The sidecar records the settings and the samples' content hashes the table was made for: changed images or
settings make another table (and another crop cache), never a stale one. A run reads its own table only, so runs
with other face settings (a sweep ``faces=none,detect`` in parallel) never read each other's boxes; splits come
from the manifest alone, and a sample with no face under ``faces.missing=reject`` leaves its split.

What a person reads shows the settings prepared last (by ``prepare`` or ``train``; evaluation writes none of it):
the manifest's :data:`~fer_lightning.data.manifest.FACE_COLUMNS`, ``rejected.csv``'s "no face found" rows,
``prepare.json``'s ``faces`` entry (``current`` names the table; ``prepared`` keeps every table's record,
with its transform) and the boxes on the contact sheet. docs/faces.md describes the layout.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fer_lightning import faces
from fer_lightning.data.cache import Variant
from fer_lightning.data.images import load_rgb, resized
from fer_lightning.errors import FERError
from fer_lightning.faces import CameraTransform, FaceResult, FaceSettings, crop, estimate_transform, locate_pair
from fer_lightning.io import atomic_write_text, file_sha1
from fer_lightning.modalities import CAMERAS, cameras

log = logging.getLogger(__name__)

FACES_DIR = "faces"
STATE = "prepare.json"
# Bump when what a table holds for the same settings and images changes.
TABLE_VERSION = 1
TABLE_COLUMNS = (
    "sample_id",
    "visible_sha1",
    "infrared_sha1",
    "face",
    "visible_box",
    "infrared_box",
    "visible_landmarks",
    "infrared_landmarks",
)
# rejected.csv's reason for a sample without a face; the rows starting with it are the face settings' own
NO_FACE = "no face found"
# fewest pairs with a face in both cameras to estimate the visible->infrared transform from
MIN_PAIRS = 3


def settings_json(settings: FaceSettings) -> dict:
    return json.loads(json.dumps(asdict(settings)))


def table_name(settings: FaceSettings, modality: str) -> str:
    return f"{settings.key()}-{modality}"


def library_key() -> str:
    """What detection depends on beside the settings and images: the face library's code and dlib's version, so
    that a table made by another version is made again."""
    h = hashlib.sha1()
    for path in sorted(Path(faces.__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    with contextlib.suppress(ImportError):
        import dlib

        h.update(str(dlib.__version__).encode())
    return h.hexdigest()[:12]


def _samples_key(rows: list[dict], modality: str) -> str:
    cams = cameras(modality)
    material = [[r["sample_id"], *(r.get(f"{m}_sha1") or r.get(m) or "" for m in cams)] for r in rows]
    return hashlib.sha1(json.dumps([TABLE_VERSION, material]).encode()).hexdigest()


def box_text(box) -> str:
    return "" if box is None else " ".join(f"{round(float(v), 1):g}" for v in box)


def _points_text(points) -> str:
    if points is None:
        return ""
    return json.dumps([[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(points).reshape(-1, 2)])


def parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    x0, y0, x1, y1 = (float(v) for v in text.split())
    return x0, y0, x1, y1


def box_list(box) -> list[float] | None:
    """A box as JSON writes it: ``[x0, y0, x1, y1]`` in source pixels, or None."""
    return None if box is None else [round(float(v), 1) for v in box]


@dataclass
class FaceTable:
    """One settings' faces for every sample of a manifest; ``meta`` is its sidecar."""

    settings: FaceSettings
    modality: str
    rows: dict[str, dict]
    meta: dict

    @property
    def name(self) -> str:
        return table_name(self.settings, self.modality)

    @property
    def transform(self) -> CameraTransform | None:
        return CameraTransform.from_json(self.meta["transform"]) if self.meta.get("transform") else None

    def status(self, sample_id: str) -> str:
        return self.rows.get(sample_id, {}).get("face", "")

    def box(self, sample_id: str, camera: str):
        return parse_box(self.rows.get(sample_id, {}).get(f"{camera}_box"))

    def landmarks(self, sample_id: str, camera: str) -> np.ndarray | None:
        return _points(self.rows.get(sample_id, {}).get(f"{camera}_landmarks"))

    def kept(self, rows: list[dict]) -> list[dict]:
        """``rows`` without the samples rejected for want of a face; the others keep their split."""
        return [r for r in rows if self.status(r["sample_id"]) != "rejected"]

    def variant(self, root: Path, rows: list[dict], camera: str) -> Variant:
        """The crop cache of ``camera`` for ``rows`` (each holding a ``camera`` image)."""

        def decode(i: int, size: int) -> np.ndarray:
            sid = rows[i]["sample_id"]
            image = load_rgb(root / rows[i][camera])
            face = crop(image, self.box(sid, camera), self.settings, self.landmarks(sid, camera))
            return resized(face, size)

        # the library's version too: its crop may change where its detections do not
        return Variant(f"{FACES_DIR}-{self.name}", f"{self.meta['table_sha1']}-{self.meta['library']}", decode)

    def record(self) -> dict:
        """What a checkpoint keeps, so that predict crops as the run did: the settings and the transform."""
        keys = ("settings", "modality", "transform", "transform_source", "counts", "table_sha1")
        return {"name": self.name, **{k: self.meta.get(k) for k in keys}}


def cropper(record: dict | None) -> FaceCropper | None:
    """The face step a checkpoint's run applied (its datamodule state's ``faces``); None for faces off."""
    if not record:
        return None
    settings = FaceSettings.from_config(record["settings"])
    if settings.mode == "none":
        return None
    transform = CameraTransform.from_json(record["transform"]) if record.get("transform") else None
    return FaceCropper(settings, transform)


@dataclass
class FaceCropper:
    """Finds the face in a raw frame (or pair) and crops it, as the run's table and cache did."""

    settings: FaceSettings
    transform: CameraTransform | None

    def locate(self, images: dict[str, np.ndarray]) -> FaceResult:
        """The face in each camera, its boxes and landmarks rounded as the table stores them (the crops are then
        those the run trained on, to the pixel)."""
        face = locate_pair(images.get("visible"), images.get("infrared"), self.settings, self.transform)
        return stored(face)

    def crops(self, images: dict[str, np.ndarray], face: FaceResult) -> dict[str, np.ndarray]:
        """Each camera's crop at its own resolution (the full frame where no box was used)."""
        out = {}
        for m, image in images.items():
            box = getattr(face, f"{m}_box")
            out[m] = crop(image, box, self.settings, getattr(face, f"{m}_landmarks"))
        return out


def face_table(root: Path, rows: list[dict], settings: FaceSettings, modality: str) -> FaceTable | None:
    """The table of ``settings`` and ``modality`` for ``rows``: read when current, else detected and written.
    None when faces are off. The caller holds the data lock."""
    if settings.mode == "none":
        return None
    name = table_name(settings, modality)
    folder = root / FACES_DIR
    table_path, meta_path = folder / f"{name}.csv", folder / f"{name}.json"
    samples = _samples_key(rows, modality)
    want = {"settings": settings_json(settings), "modality": modality, "samples": samples, "library": library_key()}
    table = _read(table_path, meta_path, want, settings, modality)
    if table is not None:
        return table
    start = time.perf_counter()
    results, transform, source = _detect(root, rows, settings, modality)
    seconds = time.perf_counter() - start
    out = [_table_row(r, results.get(r["sample_id"])) for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(out)
    atomic_write_text(table_path, buf.getvalue())
    images = sum(1 for r in rows for m in cameras(modality) if r.get(m))
    meta = {
        **want,
        "transform": transform.to_json() if transform is not None else None,
        "transform_source": source,
        "counts": _counts(out),
        "seconds": round(seconds, 3),
        "ms_per_image": round(1000 * seconds / max(1, images), 2),
        "table_sha1": file_sha1(table_path),
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")  # last: a table without it is not current
    counts = ", ".join(f"{n} {k}" for k, n in meta["counts"].items())
    log.info("faces (%s, %s): %s in %.1f s", settings.mode, modality, counts, seconds)
    return FaceTable(settings, modality, {r["sample_id"]: r for r in out}, meta)


def _read(table_path: Path, meta_path: Path, want: dict, settings: FaceSettings, modality: str) -> FaceTable | None:
    try:
        meta = json.loads(meta_path.read_text())
        if any(meta.get(k) != v for k, v in want.items()) or file_sha1(table_path) != meta["table_sha1"]:
            return None
        with open(table_path, newline="") as f:
            rows = {r["sample_id"]: r for r in csv.DictReader(f)}
    except (OSError, ValueError, KeyError):
        return None
    return FaceTable(settings, modality, rows, meta)


def _detect(
    root: Path, rows: list[dict], settings: FaceSettings, modality: str
) -> tuple[dict[str, FaceResult], CameraTransform | None, str | None]:
    """Each sample's face; in a pair, after estimating the transform, each face one camera alone found mapped into
    the other. Returns the results by sample id, the transform and where it came from (config, estimated)."""
    cams = cameras(modality)

    def locate(row: dict, transform: CameraTransform | None) -> FaceResult:
        images = {m: load_rgb(root / row[m]) if row.get(m) else None for m in cams}
        return locate_pair(images.get("visible"), images.get("infrared"), settings, transform)

    transform, source = None, None
    if settings.transform is not None:
        transform, source = CameraTransform(np.asarray(settings.transform, dtype=np.float64), 0, 0.0), "config"
    todo = [r for r in rows if any(r.get(m) for m in cams)]
    results = {r["sample_id"]: locate(r, transform) for r in todo}
    if modality != "fusion" or transform is not None:
        return results, transform, source
    both = [f for f in results.values() if f.status == "detected" and f.visible_box and f.infrared_box]
    if len(both) < MIN_PAIRS:
        if both or any(f.visible_box or f.infrared_box for f in results.values()):
            log.warning(
                "faces: only %d pair(s) with a face in both cameras, fewer than the %d the visible->infrared "
                "transform needs; a face one camera finds is not mapped into the other (set faces.transform)",
                len(both),
                MIN_PAIRS,
            )
        return results, None, None
    transform = estimate_transform([f.visible_box for f in both], [f.infrared_box for f in both])
    one_sided = [
        r
        for r in todo
        if r.get("visible") and r.get("infrared")
        and (results[r["sample_id"]].visible_box is None) != (results[r["sample_id"]].infrared_box is None)
    ]
    results.update({r["sample_id"]: locate(r, transform) for r in one_sided})
    return results, transform, "estimated"


def stored(face: FaceResult) -> FaceResult:
    """``face`` as a table row gives it back."""
    row = _table_row({"sample_id": ""}, face)
    boxes = {f"{m}_box": parse_box(row[f"{m}_box"]) for m in CAMERAS}
    points = {f"{m}_landmarks": _points(row[f"{m}_landmarks"]) for m in CAMERAS}
    return FaceResult(status=face.status, **boxes, **points)


def _points(text: str) -> np.ndarray | None:
    return np.asarray(json.loads(text), dtype=np.float64) if text else None


def _table_row(row: dict, face: FaceResult | None) -> dict:
    out = {"sample_id": row["sample_id"], **{f"{m}_sha1": row.get(f"{m}_sha1") or "" for m in CAMERAS}}
    if face is None:
        return {**out, "face": ""}
    out["face"] = face.status
    for m in CAMERAS:
        out[f"{m}_box"] = box_text(getattr(face, f"{m}_box"))
        out[f"{m}_landmarks"] = _points_text(getattr(face, f"{m}_landmarks"))
    return out


def _counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        if r["face"]:
            counts[r["face"]] = counts.get(r["face"], 0) + 1
    return dict(sorted(counts.items()))


def check_kept(rows: list[dict], table: FaceTable | None) -> None:
    """Refuses face settings that leave a split without a sample (one line naming the setting)."""
    if table is None:
        return
    kept = {r["split"] for r in table.kept(rows)}
    for split in sorted({r["split"] for r in rows} - kept):
        n = sum(1 for r in rows if r["split"] == split)
        raise FERError(
            f"faces.missing=reject: no face was found in any of the {n} {split} sample(s) (faces {table.name}), "
            "which leaves the split empty; use faces.missing=keep (the full frame), or check the images"
        )


