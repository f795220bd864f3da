"""Face detection, pair mapping and cropping (fer_lightning.faces) against the synthetic generator's planted faces."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from fer_lightning.data.synthetic import PLANTED_FACES, generate
from fer_lightning.errors import FERError
from fer_lightning.faces import (
    VISIBLE_DETECTORS,
    CameraTransform,
    Detection,
    FaceSettings,
    crop,
    detect_thermal,
    detect_visible,
    estimate_transform,
    locate_pair,
)
from fer_lightning.faces.blobs import iou
from fer_lightning.faces.crop import EYE_TEMPLATE

SCENES = dict(n_subjects=8, samples_per_class=1, image_size=80, seed=11)  # 40 scenes
KNOBS = {"face_scale": 0.5, "warm_distractors": 1}
# the generator's designed camera failures (bad light spoils the photo, sensor artifacts the thermal image) are
# what the pair mapping is for; docs/faces.md gives the rates with them, from tools/face_detection_rate.py
NO_DESIGNED_FAILURES = {"vis_bad_light_frac": 0.0, "ir_artifact_frac": 0.0}
DETECT = FaceSettings(mode="detect")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate(root, **SCENES, difficulty=KNOBS | NO_DESIGNED_FAILURES)
    with open(root / PLANTED_FACES, newline="") as f:
        boxes = {r["file"]: tuple(float(r[k]) for k in ("x0", "y0", "x1", "y1")) for r in csv.DictReader(f)}
    pairs = []
    for name in sorted(b for b in boxes if b.startswith("visible/")):
        other = "infrared/" + name.removeprefix("visible/")
        images = [np.asarray(Image.open(root / n).convert("RGB")) for n in (name, other)]
        pairs.append((*images, boxes[name], boxes[other]))
    return pairs


def _found_share(scenes, camera: str) -> float:
    hits = 0
    for vis, ir, vis_box, ir_box in scenes:
        found = detect_visible(vis, DETECT) if camera == "visible" else detect_thermal(ir, DETECT)
        planted = vis_box if camera == "visible" else ir_box
        hits += bool(found) and iou(found[0].box, planted) >= 0.5
    return hits / len(scenes)


@pytest.mark.parametrize("camera", ["visible", "infrared"])
def test_detection_finds_the_planted_face(scenes, camera):
    assert len(scenes) == 40
    assert _found_share(scenes, camera) >= 0.95


def test_pair_transform_maps_the_planted_box(scenes):
    vis_boxes, ir_boxes = [s[2] for s in scenes], [s[3] for s in scenes]
    transform = estimate_transform(vis_boxes[:20], ir_boxes[:20])
    assert transform.n == 20
    # held-out scenes: the rig's per-shot jitter (ir_misalign) is about 1 % of the side, so 3 px at 80 px
    errors = [
        np.abs(np.subtract(transform.map_box(v), r)).max() for v, r in zip(vis_boxes[20:], ir_boxes[20:], strict=True)
    ]
    assert np.median(errors) <= 3.0 and max(errors) <= 6.0
    back = CameraTransform.from_json(transform.to_json()).inverse().inverse()
    np.testing.assert_allclose(back.matrix, transform.matrix)


def test_locate_pair_maps_into_the_camera_that_missed(scenes):
    transform = estimate_transform([s[2] for s in scenes], [s[3] for s in scenes])
    vis, ir, _, ir_box = next(s for s in scenes if detect_visible(s[0], DETECT))
    grey = np.full_like(ir, 90)
    result = locate_pair(vis, grey, DETECT, transform)
    assert result.status == "mapped"
    assert iou(result.infrared_box, ir_box) >= 0.5
    assert locate_pair(vis, None, DETECT, None).status == "detected"
    assert locate_pair(vis, ir, FaceSettings(), transform).status == "off"


def test_estimate_transform_needs_three_pairs():
    box = (0.0, 0.0, 10.0, 10.0)
    with pytest.raises(FERError, match=r"faces\.transform"):
        estimate_transform([box, box], [box, box])


@pytest.mark.parametrize("missing, status", [("keep", "full_frame"), ("reject", "rejected")])
def test_no_face_in_either_camera(missing, status):
    blank = np.zeros((64, 64, 3), np.uint8)
    result = locate_pair(blank, blank, FaceSettings(mode="detect", missing=missing), None)
    assert (result.status, result.visible_box, result.infrared_box) == (status, None, None)


def _two_warm_faces(centred_small: bool) -> np.ndarray:
    """A thermal frame with two warm face-shaped blobs: a big one off-centre, a small one in the middle."""
    img = Image.new("L", (160, 160), 30)
    draw = ImageDraw.Draw(img)
    draw.ellipse([4, 10, 52, 74], fill=220)  # big, left
    if centred_small:
        draw.ellipse([66, 50, 98, 94], fill=220)  # small, central
    return np.asarray(img)


@pytest.mark.parametrize("choose, expect_x", [("largest", 28), ("central", 82)])
def test_two_faces_take_the_documented_one(choose, expect_x):
    settings = FaceSettings(mode="detect", choose=choose)
    result = locate_pair(None, _two_warm_faces(True), settings, None)
    x0, _, x1, _ = result.infrared_box
    assert abs((x0 + x1) / 2 - expect_x) <= 3


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((6, 6), np.uint8),
        np.zeros((64, 64, 3), np.uint8),
        np.full((64, 64), 128, np.uint8),
        np.full((64, 64), np.nan, np.float32),
        np.zeros((0, 0), np.uint8),
    ],
    ids=["tiny", "blank", "grey", "nan", "empty"],
)
def test_frames_without_a_face_give_no_detection(frame):
    assert detect_thermal(frame, DETECT) == []
    assert detect_visible(frame, DETECT) == []


def test_16_bit_thermal_frame_finds_the_same_face():
    eight = _two_warm_faces(False)
    sixteen = eight.astype(np.uint16) * 257 + 1000
    (a,), (b,) = detect_thermal(eight, DETECT), detect_thermal(sixteen, DETECT)
    assert iou(a.box, b.box) >= 0.95


@pytest.mark.parametrize(
    "node, key",
    [
        ({"mode": "crop"}, "faces.mode"),
        ({"missing": "drop"}, "faces.missing"),
        ({"choose": "first"}, "faces.choose"),
        ({"margin": "wide"}, "faces.margin"),
        ({"min_face": 0}, "faces.min_face"),
        ({"visible_detector": "yolo"}, "faces.visible_detector"),
        ({"transform": [[1, 0], [0, 1]]}, "faces.transform"),
        ({"colour": 1}, "faces.colour"),
    ],
)
def test_bad_face_settings_name_the_key(node, key):
    with pytest.raises(FERError, match=key.replace(".", r"\.")):
        FaceSettings.from_config(OmegaConf.create(node))


def test_settings_from_config_and_key():
    cfg = OmegaConf.create({"mode": "detect", "margin": 0.2, "transform": [[1, 0, 2], [0, 1, 3]]})
    settings = FaceSettings.from_config(cfg)
    assert settings.transform == ((1.0, 0.0, 2.0), (0.0, 1.0, 3.0))
    assert FaceSettings.from_config(None) == FaceSettings()
    changes = dict(
        mode="align", missing="reject", visible_detector="skin", choose="central", margin=0.3, min_face=20,
        transform=None, thermal_min_area=0.02, thermal_max_area=0.5,
        thermal_aspect=(1.1, 2.0), thermal_min_fill=0.5,
    )  # fmt: skip
    keys = {settings.key()} | {replace(settings, **{k: v}).key() for k, v in changes.items()}
    assert len(keys) == len(changes) + 1


def test_crop_is_square_and_padded_at_the_edge():
    image = np.arange(40 * 30 * 3, dtype=np.uint16).reshape(40, 30, 3) + 1
    out = crop(image, (0.0, 0.0, 10.0, 10.0), FaceSettings(mode="detect", margin=0.5))
    assert out.shape == (20, 20, 3) and out.dtype == image.dtype
    assert (out[:5, :] == 0).all() and (out[:, :5] == 0).all()
    np.testing.assert_array_equal(out[5:, 5:], image[:15, :15])
    assert crop(image, None, FaceSettings(mode="detect")) is image


def test_align_levels_the_eyes():
    img = Image.new("L", (100, 100), 0)
    draw = ImageDraw.Draw(img)
    eyes = np.array([[30.0, 40.0], [60.0, 55.0]])  # tilted by about 27 degrees
    for x, y in eyes:
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=255)
    landmarks = np.array([eyes[0], eyes[0], eyes[1], eyes[1], [45.0, 60.0]])
    out = crop(np.asarray(img), (20.0, 20.0, 70.0, 80.0), FaceSettings(mode="align", margin=0.0), landmarks)
    n = out.shape[0]
    assert out.shape == (60, 60)
    for (tx, ty), half in zip(EYE_TEMPLATE, (slice(0, n // 2), slice(n // 2, n)), strict=True):
        ys, xs = np.nonzero(out[:, half] > 100)
        assert abs(ys.mean() - ty * n) <= 1.5
        assert abs(xs.mean() + half.start - tx * n) <= 1.5
    plain = crop(np.asarray(img), (20.0, 20.0, 70.0, 80.0), FaceSettings(mode="align", margin=0.0))
    np.testing.assert_array_equal(
        plain, crop(np.asarray(img), (20.0, 20.0, 70.0, 80.0), FaceSettings(mode="detect", margin=0.0))
    )


def test_scene_knobs_shrink_the_face_and_plant_warm_objects(tmp_path):
    generate(tmp_path / "a", n_subjects=1, samples_per_class=2, image_size=32, seed=3)
    generate(tmp_path / "b", n_subjects=1, samples_per_class=2, image_size=32, seed=3, difficulty=KNOBS)
    sizes = []
    for name in ("a", "b"):
        with open(tmp_path / name / PLANTED_FACES, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2 * 10  # one row per visible and per infrared image
        sizes.append(np.mean([float(r["x1"]) - float(r["x0"]) for r in rows]))
    assert 0.4 <= sizes[1] / sizes[0] <= 0.6


def test_a_weak_visible_box_the_thermal_face_contradicts_gives_way(monkeypatch):
    far_corner = Detection((0.0, 0.0, 20.0, 24.0), -0.5)
    monkeypatch.setitem(VISIBLE_DETECTORS, "stub", lambda image, settings: [far_corner])
    settings = FaceSettings(mode="detect", visible_detector="stub")
    thermal = _two_warm_faces(False)
    identity = CameraTransform(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 0, 0.0)
    result = locate_pair(np.zeros((160, 160, 3), np.uint8), thermal, settings, identity)
    assert result.status == "mapped"
    assert iou(result.visible_box, result.infrared_box) > 0.99 and result.visible_box[0] > 0
    monkeypatch.setitem(VISIBLE_DETECTORS, "stub", lambda image, settings: [replace(far_corner, score=0.5)])
    assert locate_pair(np.zeros((160, 160, 3), np.uint8), thermal, settings, identity).status == "detected"


@pytest.mark.parametrize("knob, value", [("face_scale", 0.1), ("face_scale", 1.5), ("warm_distractors", 1.5)])
def test_bad_scene_knobs_name_the_knob(tmp_path, knob, value):
    with pytest.raises(ValueError, match=knob):
        generate(tmp_path, n_subjects=1, samples_per_class=1, image_size=32, difficulty={knob: value})
