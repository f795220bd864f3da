"""faces=detect|align through every dataset, modality and command: the manifest's face columns, the transform in
prepare.json, rejected samples, the crop cache, predict's face_box, explain on the crop, evaluate's refusal."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from fer_lightning.data.cache import CACHE_DIR
from fer_lightning.data.face_crops import FACES_DIR, NO_FACE
from fer_lightning.errors import FERError
from fer_lightning.faces import STATUSES, FaceSettings, crop
from fer_lightning.modalities import CAMERAS
from fer_lightning.prepare import prepare
from fer_lightning.runs import build_datamodule
from tests.conftest import CONF, TINY, compose_cfg
from tests.helpers.commands import one_error_line, train_cli
from tests.helpers.eval_runs import compose_app, tiny_run

# The synthetic scene setting: a half-size face somewhere in a cluttered frame, a warm object beside it in thermal.
SCENES = [*TINY, "dataset.generator.difficulty={face_scale:0.5,warm_distractors:1}"]
COMMANDS = ("train", "prepare", "eval", "predict", "explain", "robustness", "export")


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    """A data dir of its own: the session's shares the default synthetic faces with other test modules."""
    return tmp_path_factory.mktemp("scene_data")


def _datamodule(tmp: Path, data_dir: Path, *overrides: str):
    base = SCENES if "dataset=folder" not in overrides else [o for o in TINY if not o.startswith("dataset.generator")]
    cfg = compose_cfg([*base, "logger=none", *overrides], tmp, data_dir)
    dm = build_datamodule(cfg.dataset)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _box(text: str) -> list[float] | None:
    return [float(v) for v in text.split()] if text else None


def test_faces_config_lists_every_setting_at_its_default():
    """conf/faces/ holds every FaceSettings key (each can be overridden) at the library's default."""
    base = OmegaConf.to_container(OmegaConf.load(CONF / "faces" / "_base.yaml"))
    defaults = json.loads(json.dumps(asdict(FaceSettings())))
    assert base == defaults
    for mode in ("none", "detect", "align"):
        cfg = compose_cfg([f"faces={mode}"], Path("unused"))
        assert FaceSettings.from_config(cfg.faces) == FaceSettings(mode=mode)
        assert OmegaConf.to_container(cfg.dataset.faces, resolve=True) == {**defaults, "mode": mode}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_faces(command, tmp_path):
    cfg = compose_app(command, ["faces=detect", "faces.missing=reject"], tmp_path)
    assert (cfg.faces.mode, cfg.faces.missing) == ("detect", "reject")


def test_a_bad_face_setting_is_one_error_line(tmp_path):
    proc = train_cli(tmp_path, "faces=detect", "faces.missing=maybe")
    assert one_error_line(proc) == "error: faces.missing='maybe' is not valid: use keep | reject"
    assert not (tmp_path / "run" / "results.json").exists()
    proc = train_cli(tmp_path, "faces=foo")
    assert one_error_line(proc) == "error: faces=foo: no such faces; choose one of align, detect, none"
    with pytest.raises(FERError, match=r"faces\.missing='maybe'"):
        prepare(compose_app("prepare", ["dataset=synthetic", "faces.missing=maybe"], tmp_path))


def test_detect_records_boxes_and_transform_without_changing_splits(tmp_path, scene_dir):
    plain = _datamodule(tmp_path / "none", scene_dir)
    root = plain.root
    splits = {r["sample_id"]: r["split"] for r in _manifest(root)}
    dm = _datamodule(tmp_path / "detect", scene_dir, "faces=detect")
    rows = _manifest(root)
    # the face columns, with a status per sample and boxes in source pixels inside each camera's frame
    assert {"face", "visible_box", "infrared_box"} <= set(rows[0])
    assert {r["face"] for r in rows} <= set(STATUSES) - {"off"}
    found = [r for r in rows if r["face"] in ("detected", "mapped")]
    assert len(found) >= 0.8 * len(rows)
    for r in found:
        for m in ("visible", "infrared"):
            x0, y0, x1, y1 = _box(r[f"{m}_box"])
            w, h = Image.open(root / r[m]).size
            assert -1 <= x0 < x1 <= w + 1 and -1 <= y0 < y1 <= h + 1
    # splits do not depend on faces, and neither does the manifest's identity a checkpoint records
    assert {r["sample_id"]: r["split"] for r in rows} == splits
    assert dm.manifest_sha1 == plain.manifest_sha1
    # the visible->infrared transform, estimated once from the pairs where both cameras found the face
    faces = json.loads((root / "prepare.json").read_text())["faces"]
    record = faces["prepared"][faces["current"]]
    assert record["transform_source"] == "estimated"
    assert np.asarray(record["transform"]["matrix"]).shape == (2, 3) and record["transform"]["n"] >= 3
    assert record["counts"] == dm.face_table.meta["counts"]
    name = faces["current"]
    assert dm.face_table.name == name and (root / FACES_DIR / f"{name}.csv").is_file()
    assert len(dm.rows) == len(rows)  # faces.missing=keep: every sample stays
    # faces=none again: the manifest shows whole frames, and the detect table stays for the next detect run
    _datamodule(tmp_path / "none2", scene_dir)
    assert "face" not in _manifest(root)[0]
    assert json.loads((root / "prepare.json").read_text())["faces"]["current"] == "none"
    assert (root / FACES_DIR / f"{name}.csv").is_file()


def test_faces_none_leaves_a_prepared_dataset_as_it_was(tmp_path):
    """The default reads and writes nothing of the face step's: no faces/ folder, face column or prepare.json key."""
    dm = _datamodule(tmp_path, tmp_path / "data")
    assert dm.face_table is None and not (dm.root / FACES_DIR).exists()
    assert "face" not in _manifest(dm.root)[0]
    assert "faces" not in json.loads((dm.root / "prepare.json").read_text())
    assert not [p for p in (dm.root / CACHE_DIR).iterdir() if p.name.startswith(FACES_DIR)]


def test_a_visible_run_searches_the_visible_camera_only(tmp_path, scene_dir):
    dm = _datamodule(tmp_path, scene_dir, "faces=detect", "modality=visible")
    table = dm.face_table
    assert table.meta["modality"] == "visible" and table.transform is None
    assert all(not r["infrared_box"] for r in table.rows.values())
    assert {r["face"] for r in table.rows.values()} <= {"detected", "full_frame"}


def test_the_cache_is_rebuilt_when_face_settings_change(tmp_path, scene_dir):
    def crops(*overrides: str) -> tuple[set[str], np.ndarray]:
        dm = _datamodule(tmp_path / "_".join(overrides), scene_dir, *overrides)
        return {p.name for p in (dm.root / CACHE_DIR).glob("*.npy")}, np.asarray(dm._datasets["val"].images["visible"])

    before, wide = crops("faces=detect", "faces.margin=0.5")
    after, tight = crops("faces=detect", "faces.margin=0.1")
    key = FaceSettings(mode="detect", margin=0.1).key()
    assert {name.split("-40px-")[0] for name in after - before} == {f"{FACES_DIR}-{key}-fusion-{m}" for m in CAMERAS}
    assert not np.array_equal(wide, tight)  # another margin, other crops: none reused
    _, frames = crops()  # faces=none: the whole frames, from a cache of their own
    assert not np.array_equal(frames, tight)


def test_settings_that_reject_a_whole_split_are_refused_before_anything_changes(tmp_path, scene_dir):
    root = _datamodule(tmp_path / "none", scene_dir).root
    before = {name: (root / name).read_bytes() for name in ("manifest.csv", "rejected.csv", "prepare.json")}
    with pytest.raises(FERError, match=r"faces\.missing=reject: no face was found in any of the \d+ \w+ sample"):
        # no face is that large: every sample would be rejected
        _datamodule(tmp_path / "reject", scene_dir, "faces=detect", "faces.missing=reject", "faces.min_face=1000")
    assert {name: (root / name).read_bytes() for name in before} == before


def _folder_with_blank_frames(tmp: Path, scene_root: Path) -> Path:
    """A folder dataset of scene pairs plus, per class, one pair of flat grey frames (no face in either camera)."""
    root = tmp / "folder"
    for r in _manifest(scene_root)[:40]:
        for m in ("visible", "infrared"):
            dest = root / m / r["label"] / Path(r[m]).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((scene_root / r[m]).read_bytes())
    for i, label in enumerate(sorted({p.name for p in (root / "visible").iterdir()})):
        for m in ("visible", "infrared"):
            grey = np.full((40, 40, 3), 90 + 7 * i + (m == "infrared"), dtype=np.uint8)
            Image.fromarray(grey).save(root / m / label / f"blank_{i}.png")
    return root


@pytest.mark.slow
def test_missing_keep_trains_on_the_frame_and_reject_drops_the_sample(tmp_path, scene_dir):
    _datamodule(tmp_path / "gen", scene_dir)  # the scenes the folder copies
    source = _folder_with_blank_frames(tmp_path, scene_dir / "synthetic")
    data = tmp_path / "data"
    folder = ["dataset=folder", f"dataset.root={source}", "dataset.split.ratios=[0.5,0.25,0.25]"]
    plain = _datamodule(tmp_path / "none", data, *folder)
    splits = {r["sample_id"]: r["split"] for r in plain.rows}
    blanks = {s for s in splits if "blank_" in s}
    assert blanks

    keep = _datamodule(tmp_path / "keep", data, *folder, "faces=detect")
    rows = {r["sample_id"]: r for r in _manifest(keep.root)}
    assert {rows[s]["face"] for s in blanks} == {"full_frame"}
    assert all(not rows[s]["visible_box"] and not rows[s]["infrared_box"] for s in blanks)
    assert {r["sample_id"] for r in keep.rows} == set(splits)  # kept, on the full frame

    reject = _datamodule(tmp_path / "reject", data, *folder, "faces=detect", "faces.missing=reject")
    rows = {r["sample_id"]: r for r in _manifest(reject.root)}
    assert {rows[s]["face"] for s in blanks} == {"rejected"}
    used = {r["sample_id"]: r["split"] for r in reject.rows}
    assert not blanks & set(used)
    # every other sample keeps the split it has without faces
    assert used == {s: split for s, split in splits.items() if rows[s]["face"] != "rejected"}
    with open(reject.root / "rejected.csv", newline="") as f:
        listed = [r for r in csv.DictReader(f) if r["reason"].startswith(NO_FACE)]
    rejected = {s for s, r in rows.items() if r["face"] == "rejected"}
    assert {Path(r["file"]).stem for r in listed} == {Path(rows[s]["visible"]).stem for s in rejected}
    assert all("faces.missing=reject" in r["reason"] for r in listed)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, scene_dir) -> Path:
    return tiny_run(tmp_path_factory, scene_dir, "fusion", *SCENES[len(TINY) :], "faces=detect")


def _ckpt(run_dir: Path) -> str:
    return f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"


def _detected(run_dir: Path, scene_dir: Path) -> dict:
    root = scene_dir / "synthetic"
    return next(r for r in _manifest(root) if r["face"] == "detected" and r["split"] == "test")


@pytest.mark.slow
def test_predict_finds_the_face_in_a_full_frame(run_dir, scene_dir, tmp_path, capsys):
    from fer_lightning.predict import predict

    row = _detected(run_dir, scene_dir)
    root = scene_dir / "synthetic"
    inputs = [f"visible={root / row['visible']}", f"infrared={root / row['infrared']}"]
    out = predict(compose_app("predict", [_ckpt(run_dir), *inputs], tmp_path))
    assert json.loads(capsys.readouterr().out) == out
    assert out["prediction"] in out["probabilities"] and out["face"] == "detected"
    # the box the run's table holds for this frame, in source pixels
    for m in ("visible", "infrared"):
        assert out["face_box"][m] == pytest.approx(_box(row[f"{m}_box"]), abs=0.11)
    # the checkpoint's settings apply; other ones are refused, the same ones accepted
    with pytest.raises(FERError, match="faces=none: not applied at predict: the run used faces=detect"):
        predict(compose_app("predict", [_ckpt(run_dir), *inputs, "faces=none"], tmp_path))
    assert predict(compose_app("predict", [_ckpt(run_dir), *inputs, "faces=detect"], tmp_path)) == out


@pytest.mark.slow
def test_an_exported_model_crops_as_its_checkpoint(run_dir, scene_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")  # the [export] extra
    from fer_lightning.predict import predict
    from fer_lightning.runs.export import export_checkpoint
    from fer_lightning.runs.predict import command_line

    meta = export_checkpoint(compose_app("export", [_ckpt(run_dir)], tmp_path / "export"))
    assert meta["faces"]["settings"]["mode"] == "detect" and meta["faces"]["transform"] is not None
    row = _detected(run_dir, scene_dir)
    root = scene_dir / "synthetic"
    inputs = [f"visible={root / row['visible']}", f"infrared={root / row['infrared']}"]
    by_ckpt = predict(compose_app("predict", [_ckpt(run_dir), *inputs], tmp_path))
    model = command_line([f"model={tmp_path / 'export' / 'model.onnx'}"])
    by_onnx = predict(compose_app("predict", [*model, *inputs], tmp_path))
    assert (by_onnx["face"], by_onnx["face_box"], by_onnx["prediction"]) == (
        by_ckpt["face"],
        by_ckpt["face_box"],
        by_ckpt["prediction"],
    )
    for cls, p in by_ckpt["probabilities"].items():
        assert by_onnx["probabilities"][cls] == pytest.approx(p, abs=1e-4)


@pytest.mark.slow
def test_evaluate_uses_the_runs_face_settings_and_refuses_others(run_dir, tmp_path):
    from fer_lightning.evaluate import evaluate

    for override in ("faces=none", "faces=align", "faces.margin=0.5"):
        with pytest.raises(FERError, match=f"{override}: not applied at evaluation: the run used faces=detect"):
            evaluate(compose_app("eval", [_ckpt(run_dir), override], tmp_path))
    results = evaluate(compose_app("eval", [_ckpt(run_dir), "faces=detect"], tmp_path))
    trained = json.loads((run_dir / "results.json").read_text())
    assert trained["faces"]["settings"]["mode"] == "detect" and results["faces"] == trained["faces"]
    assert results["test"]["n"] == trained["test"]["n"]
    assert results["test"]["accuracy"] == pytest.approx(trained["test"]["accuracy"])


@pytest.mark.slow
def test_explain_draws_the_heat_map_on_the_crop_and_the_box_on_the_frame(run_dir, scene_dir, tmp_path):
    from fer_lightning.analysis.cam import explain

    row = _detected(run_dir, scene_dir)
    root = scene_dir / "synthetic"
    inputs = [f"visible={root / row['visible']}", f"infrared={root / row['infrared']}"]
    result = explain(compose_app("explain", [_ckpt(run_dir), *inputs], tmp_path))
    assert result["face"] == "detected" and set(result["frames"]) == {"visible", "infrared"}
    for m in ("visible", "infrared"):
        frame = Image.open(root / row[m])
        assert Image.open(result["frames"][m]).size == frame.size
        # the heat map is drawn on the crop the network saw, at the crop's own resolution
        face = crop(np.asarray(frame.convert("RGB")), tuple(result["face_box"][m]), FaceSettings(mode="detect"))
        assert Image.open(result["heatmaps"][m]).size == face.shape[1::-1] != frame.size


def test_the_report_keeps_crops_and_whole_frames_apart():
    from fer_lightning.analysis.results_table import summarise_runs

    def run(seed: int, faces: dict | None, accuracy: float) -> dict:
        return {"dataset": "synthetic", "modality": "visible", "seed": seed, "faces": faces,
                "test": {"n": 10, "accuracy": accuracy}}  # fmt: skip

    detect = {"settings": {"mode": "detect"}}
    rows = summarise_runs([run(0, None, 0.5), run(1, None, 0.7), run(0, detect, 0.9), run(1, detect, 0.9)])
    assert {r["experiment"]: (r["runs"], r["accuracy_mean"]) for r in rows} == {
        "-": (2, pytest.approx(60.0)),
        "- faces=detect": (2, pytest.approx(90.0)),
    }


def test_predict_refuses_a_frame_without_a_face_only_where_the_run_rejected_such_samples():
    from types import SimpleNamespace

    from fer_lightning.data.face_crops import FaceCropper
    from fer_lightning.runs.predictor import NoFace, Predictor

    blank = {"visible": np.full((48, 40, 3), 120, dtype=np.uint8)}
    for missing in ("keep", "reject"):
        predictor = SimpleNamespace(faces=FaceCropper(FaceSettings(mode="detect", missing=missing), None), stored=32)
        if missing == "reject":
            with pytest.raises(NoFace, match=r"no face found in grey\.png .*faces\.missing=reject"):
                Predictor.finish(predictor, blank, {"visible": "grey.png"})
            continue
        images, face = Predictor.finish(predictor, blank, {"visible": "grey.png"})
        assert face.status == "full_frame" and face.visible_box is None
        assert images["visible"].shape == (32, 32, 3)  # the whole frame, as the cache stores it
