"""Rendering a sample in both modalities and writing a dataset of them to disk."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from fer_lightning.data.contact_sheet import contact_sheet
from fer_lightning.data.manifest import CONTACT_SHEET, MANIFEST, REJECTED, rejected_text, write_manifest
from fer_lightning.data.synthetic.geometry import CLASSES, build_geometry
from fer_lightning.data.synthetic.knobs import Knobs
from fer_lightning.data.synthetic.scene import Scene, sample_scene
from fer_lightning.data.synthetic.subject import Subject
from fer_lightning.data.synthetic.thermal import palette_lut, render_thermal
from fer_lightning.data.synthetic.visible import render_visible
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_bytes, atomic_write_text, commit, file_sha1
from fer_lightning.validation import Number, checked

log = logging.getLogger(__name__)

# Per-sample conditions beside the manifest, to slice results by them (e.g. fusion on bad-light photos).
CONDITIONS = "conditions.csv"
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
# The face each image shows: its skin outline's box in source pixels, for checking a face detector against
PLANTED_FACES = "planted_faces.csv"
# generate()'s arguments a prepared synthetic dataset was drawn with; other arguments draw it again
GENERATOR_STAMP = "generator.json"


def check_expression(expression: str) -> None:
    """Raises ValueError naming the valid classes unless ``expression`` is one of :data:`CLASSES`."""
    if expression not in CLASSES:
        raise ValueError(f"unknown expression {expression!r}; valid: {', '.join(CLASSES)}")


def render_sample(
    rng: np.random.Generator, subject: Subject, expression: str, image_size: int, palette: str, knobs: Knobs
) -> tuple[np.ndarray, np.ndarray, Scene]:
    """One (visible, infrared) pair, each ``(image_size, image_size, 3)`` uint8, and the scene it drew
    (intensity, failures), for ``conditions.csv``."""
    check_expression(expression)
    palette_lut(palette)
    # Separate streams, so a knob that only affects one modality leaves the other one's pixels unchanged.
    scene_rng, vis_rng, ir_rng = (np.random.default_rng(s) for s in rng.integers(2**62, size=3))
    scene = sample_scene(scene_rng, subject, knobs)
    geom = build_geometry(subject, expression, scene.intensity)
    visible = render_visible(vis_rng, subject, geom, scene, image_size, knobs)
    ir_geom = (
        geom if knobs.ir_expression == 1 else build_geometry(subject, expression, scene.intensity * knobs.ir_expression)
    )
    infrared = render_thermal(ir_rng, subject, ir_geom, scene, image_size, knobs, palette)
    return visible, infrared, scene


def planted_boxes(
    subject: Subject, expression: str, scene: Scene, image_size: int
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
    """The (visible, infrared) box ``x0, y0, x1, y1`` of the face's skin outline (forehead to chin, cheek to cheek,
    without hair, ears or neck), in source pixels."""
    outline = next(
        layer.points for layer in build_geometry(subject, expression, scene.intensity).layers if layer.part == "face"
    )
    boxes = []
    for pose in (scene.pose, scene.ir_pose):
        pts = np.asarray(pose.to_pixels(outline, image_size)).reshape(-1, 2)
        boxes.append(tuple(round(float(v), 2) for v in (*pts.min(axis=0), *pts.max(axis=0))))
    return boxes[0], boxes[1]


def _write_png(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    atomic_write_bytes(path, buf.getvalue())


def near_duplicate(rng: np.random.Generator, *images: np.ndarray) -> tuple[np.ndarray, ...]:
    """Near-identical copies of a sample's images, as the next video frame gives: all moved by one small shift
    (up to 1 % of the side and at least a pixel each way, in fractions of a pixel; edges repeated), each with its
    own sensor noise (2 levels) and JPEG re-encoding (quality 70-95)."""
    reach = max(1.0, 0.01 * images[0].shape[0])
    dy, dx = rng.uniform(-reach, reach, size=2)
    out = []
    for image in images:
        moved = ndimage.shift(image.astype(np.float64), (dy, dx, 0), order=1, mode="nearest")
        noisy = np.clip(np.rint(moved + rng.normal(0.0, 2.0, moved.shape)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
        with Image.open(buf) as img:
            out.append(np.asarray(img.convert("RGB")))
    return tuple(out)


# generate()'s counts; a bad one is a ValueError, as its other arguments' are (build_dataset names dataset.generator)
RULES = {
    "n_subjects": Number(int, 1),
    "samples_per_class": Number(int, 1),
    "image_size": Number(int, 16),
    "seed": Number(int, 0),
}


def generate(
    out_dir: str | Path,
    *,
    n_subjects: int = 30,
    samples_per_class: int = 5,
    image_size: int = 80,
    seed: int = 0,
    palette: str = "iron",
    difficulty: str | Mapping[str, Any] = "default",
) -> list[dict]:
    """Write ``out_dir/{visible,infrared}/<Class>/<sample_id>.png`` and return one row per sample.

    Rows have ``sample_id`` (``s007_Happy_03``), ``label`` (class name), ``visible`` and ``infrared``
    (posix paths relative to ``out_dir``) and ``subject`` (``s007``, 0-based). ``samples_per_class`` is
    per subject. ``conditions.csv`` records each sample's expression intensity and which failure, if any,
    it drew (``visible_condition``: dark / glare / shadow; ``occluder``; ``infrared_condition``: hot_object /
    defocus / stripes / drift). The ``near_duplicates`` knob adds copies of a sample (``s007_Happy_03_copy1``, same
    label, subject and conditions). Every sample draws from its own generator seeded by (seed, subject, class,
    index), so output is byte-identical for the same arguments and independent of generation order.
    """
    n_subjects = checked(RULES, "n_subjects", n_subjects, ValueError)
    samples_per_class = checked(RULES, "samples_per_class", samples_per_class, ValueError)
    image_size = checked(RULES, "image_size", image_size, ValueError)
    seed = checked(RULES, "seed", seed, ValueError)
    palette_lut(palette)
    knobs = Knobs.from_difficulty(difficulty)

    out = Path(out_dir)
    for modality in ("visible", "infrared"):
        for cls in CLASSES:
            (out / modality / cls).mkdir(parents=True, exist_ok=True)
    sw, kw = max(3, len(str(n_subjects - 1))), max(2, len(str(samples_per_class - 1)))
    rows, conditions, planted = [], [], []

    def write(sample_id: str, cls: str, subject_id: str, visible: np.ndarray, infrared: np.ndarray, scene: Scene):
        row = {
            "sample_id": sample_id,
            "label": cls,
            "visible": f"visible/{cls}/{sample_id}.png",
            "infrared": f"infrared/{cls}/{sample_id}.png",
            "subject": subject_id,
        }
        _write_png(out / row["visible"], visible)
        _write_png(out / row["infrared"], infrared)
        rows.append(row)
        # a near-duplicate copy is its sample moved by at most 1 % of the side: its sample's box is kept
        vis_box, ir_box = planted_boxes(subject, cls, scene, image_size)
        for modality, box in (("visible", vis_box), ("infrared", ir_box)):
            planted.append({"file": row[modality], **dict(zip(BOX_COLUMNS, box, strict=True))})
        conditions.append(
            {
                "sample_id": sample_id,
                "intensity": f"{scene.intensity:.3f}",
                "visible_condition": scene.bad_light or "",
                "occluder": scene.occluder_kind or "",
                "infrared_condition": scene.ir_artifact or "",
            }
        )

    for s in range(n_subjects):
        subject_rng = np.random.default_rng(np.random.SeedSequence([seed, 0, s]))
        subject = Subject.sample(subject_rng, knobs.identity_spread)
        subject_id = f"s{s:0{sw}d}"
        for c, cls in enumerate(CLASSES):
            for k in range(samples_per_class):
                rng = np.random.default_rng(np.random.SeedSequence([seed, 1, s, c, k]))
                visible, infrared, scene = render_sample(rng, subject, cls, image_size, palette, knobs)
                sample_id = f"{subject_id}_{cls}_{k:0{kw}d}"
                write(sample_id, cls, subject_id, visible, infrared, scene)
                if knobs.near_duplicates:
                    copy_rng = np.random.default_rng(np.random.SeedSequence([seed, 2, s, c, k]))
                    copies = int(knobs.near_duplicates)
                    copies += int(copy_rng.random() < knobs.near_duplicates - copies)
                    for j in range(1, copies + 1):
                        v, i = near_duplicate(copy_rng, visible, infrared)
                        write(f"{sample_id}_copy{j}", cls, subject_id, v, i, scene)
    _write_csv(out / CONDITIONS, conditions)
    _write_csv(out / PLANTED_FACES, planted)
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def build_dataset(root: Path, generator: Mapping[str, Any]) -> None:
    """The prepared synthetic dataset in ``root``: images, manifest, rejected.csv and contact sheet, drawn with
    :func:`generate`'s arguments ``generator``; kept as it is when ``root`` holds it already.

    It is drawn beside ``root`` and swapped in at the end, so an interrupted run leaves no partial dataset.
    """
    settings = json.dumps(dict(generator), sort_keys=True)
    stamp = root / GENERATOR_STAMP
    if (root / MANIFEST).is_file() and stamp.is_file() and stamp.read_text() == settings:
        return
    log.info("generating the synthetic dataset in %s", root)
    tmp = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        rows = generate(tmp, **generator)
    except (TypeError, ValueError) as exc:  # a bad dataset.generator key or value
        shutil.rmtree(tmp, ignore_errors=True)
        raise FERError(f"dataset.generator: {exc}") from exc
    for r in rows:
        r["split"] = ""
        for m in ("visible", "infrared"):
            r[f"{m}_sha1"] = file_sha1(tmp / r[m])
    write_manifest(tmp / MANIFEST, rows)
    atomic_write_text(tmp / GENERATOR_STAMP, settings)
    atomic_write_text(tmp / REJECTED, rejected_text([]))  # every generated file is used
    contact_sheet(tmp, rows, tmp / CONTACT_SHEET)
    if root.exists():
        shutil.rmtree(root)
    commit(tmp, root)
