"""``python -m fer_lightning.prepare``: published archives (local server or copied in), folder datasets,
pairing, rejected files, idempotence (training on what it prepares: tests/integration/test_prepare_runs.py). No
internet: 127.0.0.1 only."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lightning.data.manifest import read_manifest
from fer_lightning.data.sources.archive_table import PUBLISHED_ARCHIVES
from fer_lightning.errors import FERError
from fer_lightning.prepare import prepare
from fer_lightning.runs import build_datamodule
from tests.conftest import compose_cfg
from tests.helpers.archive_fixtures import (
    build_zip,
    closed_port_url,
    file_blob_id,
    image_bytes,
    serve_directory,
    specs_with_blobs,
)
from tests.helpers.prepare_inputs import (
    FAST_TRAIN,
    copy_raw,
    folder_cfg,
    make_folder,
    prepare_cfg,
    write_image,
)

# 4 pairs per class: the study's 393/83/90 ratios would leave val empty, which prepare refuses
SMALL_SPLIT = "dataset.split.ratios=[0.7,0.15,0.15]"
OUTPUTS = ("manifest.csv", "rejected.csv", "contact_sheet.png", "split.json", "prepare.json", ".scan.json")


def rejected(root: Path) -> dict[str, str]:
    with open(root / "rejected.csv", newline="") as f:
        return {r["file"]: r["reason"] for r in csv.DictReader(f)}


def stamps(root: Path) -> dict[str, int]:
    return {name: (root / name).stat().st_mtime_ns for name in OUTPUTS}


# --------------------------------------------------------------------------------------------------
# Published archives


def test_viri_downloads_verifies_and_prepares_then_reruns_without_change(tmp_path, published, pinned, capsys):
    data = tmp_path / "data"
    with serve_directory(published["viri"][0]) as server:
        # 4 pairs per class: 70/15/15 rather than the study's 393/83/90 sizes, so every split gets a sample
        cfg = prepare_cfg(
            ["dataset=viri", f"dataset.base_url={server.url}", "dataset.split.ratios=[0.7,0.15,0.15]"], data
        )
        info = prepare(cfg)
        fetched = len(server.requests)
        root = data / "viri"
        fetched_names = sorted(p.name for p in (data / "raw" / "viri").glob("*.zip"))
        assert fetched_names == sorted(s.name for s in PUBLISHED_ARCHIVES["viri"])
        rows = read_manifest(root / "manifest.csv")
        assert len(rows) == 20 and info["rows"] == 20
        assert {r["label"] for r in rows} == {"Angry", "Happy", "Neutral", "Sad", "Surprise"}
        assert all(r["visible"] and r["infrared"] for r in rows)
        for r in rows:  # pairs by stem: IMG_003_vis.JPG <-> img_003_IR.jpg
            assert Path(r["visible"]).name.lower()[:7] == Path(r["infrared"]).name.lower()[:7]
            assert (root / r["visible"]).is_file() and not Path(r["visible"]).is_absolute()
        assert {r["split"] for r in rows} == {"train", "val", "test"}
        rej = rejected(root)
        assert rej["extracted/VIRI-Angry-Vis/Angry/S01/broken.jpg"].startswith("unreadable image")
        assert rej["VIRI-Angry-Vis.zip/Angry/Thumbs.db"] == "OS metadata file"
        assert rej["VIRI-Angry-Vis.zip/Angry/readme.txt"] == "not an image (.txt)"
        assert rej["VIRI-Sad-Vis.zip/Sad/__MACOSX/._x.jpg"] == "macOS metadata folder"
        assert len(rej) == 31  # 5 junk per visible archive, desktop.ini per infrared one, the corrupt image
        out = capsys.readouterr().out
        assert "Surprise" in out and "rejected: 31 files" in out and "unreadable image" in out

        before, manifest = stamps(root), (root / "manifest.csv").read_bytes()
        start = time.perf_counter()
        prepare(cfg)
        assert time.perf_counter() - start < 5
        assert len(server.requests) == fetched  # nothing fetched again
    assert stamps(root) == before and (root / "manifest.csv").read_bytes() == manifest


def test_nvie_offline_merges_parts_and_falls_back_to_sorted_order(tmp_path, published, pinned, capsys, caplog):
    data = tmp_path / "data"
    copy_raw(published, "nvie", data)
    # A closed port: any attempt to reach the network would fail the run.
    cfg = prepare_cfg(["dataset=nvie", "dataset.download=false", f"dataset.base_url={closed_port_url()}"], data)
    info = prepare(cfg)
    rows = read_manifest(data / "nvie" / "manifest.csv")
    by_label = {c: [r for r in rows if r["label"] == c] for c in ("fear", "disgust", "happy")}
    assert [len(v) for v in by_label.values()] == [4, 4, 4]
    # the happy class is split over a .7z and a .zip part
    assert {r["visible"].split("/")[1] for r in by_label["happy"]} == {"NVIE-happy1-Vis", "NVIE-happy2-Vis"}
    fear = sorted((Path(r["visible"]).name, Path(r["infrared"]).name) for r in by_label["fear"])
    assert fear == [(f"fear_{i}.JPG", f"T{i}.png") for i in range(1, 5)]
    assert "warnings: 1 (logged above" in capsys.readouterr().out
    assert any(w.startswith("class 'fear'") and "sorted order" in w for w in info["warnings"])
    assert "class 'fear'" in caplog.text
    assert rejected(data / "nvie")["extracted/NVIE-disgust1-Vis/disgust/S01/broken.jpg"].startswith("unreadable")


def test_nvie_strict_pairing_refuses_unmatched_names(tmp_path, published, pinned):
    data = tmp_path / "data"
    copy_raw(published, "nvie", data)
    cfg = prepare_cfg(["dataset=nvie", "dataset.download=false", "dataset.pairing=strict"], data)
    with pytest.raises(FERError, match=r"class 'fear'.*dataset.pairing=auto"):
        prepare(cfg)


def test_verify_false_accepts_archives_with_other_blob_ids(tmp_path, published):
    data = tmp_path / "data"
    copy_raw(published, "viri", data)
    offline = ["dataset=viri", "dataset.download=false", SMALL_SPLIT]
    with pytest.raises(FERError, match=r"do not match their git blob ids.*dataset.verify=false"):
        prepare(prepare_cfg(offline, data))
    with pytest.warns(UserWarning, match=r"VIRI-Angry-Vis.zip: git blob id .* dataset.verify=false"):
        prepare(prepare_cfg([*offline, "dataset.verify=false"], data))
    assert len(read_manifest(data / "viri" / "manifest.csv")) == 20


def test_archive_class_folder_disagreeing_with_its_name_is_reported(tmp_path, published, monkeypatch):
    data = tmp_path / "data"
    raw = copy_raw(published, "viri", data)
    build_zip(raw / "VIRI-Sad-Vis.zip", {f"Happy/IMG_{i:03d}_vis.JPG": image_bytes(900 + i) for i in range(1, 5)})
    blobs = {**published["viri"][1], "VIRI-Sad-Vis.zip": file_blob_id(raw / "VIRI-Sad-Vis.zip")}
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "viri", specs_with_blobs("viri", blobs))
    info = prepare(prepare_cfg(["dataset=viri", "dataset.download=false", SMALL_SPLIT], data))
    assert any("VIRI-Sad-Vis.zip: 4 image(s) are in a folder named 'Happy'" in w for w in info["warnings"])
    rows = read_manifest(data / "viri" / "manifest.csv")
    assert sum(r["label"] == "Sad" for r in rows) == 4  # labels follow the archive name


def _rewrite_sad_visible(raw: Path, monkeypatch, published, extra: list[tuple[str, bytes]]) -> None:
    """VIRI-Sad-Vis.zip with its own members followed by ``extra``; the table pins its new blob id."""
    with zipfile.ZipFile(raw / "VIRI-Sad-Vis.zip") as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    build_zip(raw / "VIRI-Sad-Vis.zip", members + extra)
    blobs = {**published["viri"][1], "VIRI-Sad-Vis.zip": file_blob_id(raw / "VIRI-Sad-Vis.zip")}
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "viri", specs_with_blobs("viri", blobs))


def test_a_repeated_name_in_an_archive_keeps_the_first_in_manifest_and_on_disk(tmp_path, published, monkeypatch):
    data = tmp_path / "data"
    raw = copy_raw(published, "viri", data)
    name = "Sad/S01/IMG_001_vis.JPG"
    with zipfile.ZipFile(raw / "VIRI-Sad-Vis.zip") as zf:
        first = zf.read(name)
    _rewrite_sad_visible(raw, monkeypatch, published, [(name, image_bytes(4242))])
    prepare(prepare_cfg(["dataset=viri", "dataset.download=false", SMALL_SPLIT], data))
    root = data / "viri"
    row = next(r for r in read_manifest(root / "manifest.csv") if r["visible"].endswith(name))
    assert row["label"] == "Sad"
    assert row["visible_sha1"] == hashlib.sha1((root / row["visible"]).read_bytes()).hexdigest()
    assert row["visible_sha1"] == hashlib.sha1(first).hexdigest()
    assert (
        rejected(root)[f"VIRI-Sad-Vis.zip/{name}"]
        == f"same name (case aside) as the earlier entry {name!r}, which is kept"
    )


def test_an_archive_over_the_entry_cap_is_refused_naming_the_key(tmp_path, published, monkeypatch):
    data = tmp_path / "data"
    raw = copy_raw(published, "viri", data)
    _rewrite_sad_visible(raw, monkeypatch, published, [("Sad/zero.png", bytes(3 << 20))])
    cfg = prepare_cfg(["dataset=viri", "dataset.download=false", "dataset.extract.max_entry_mb=2"], data)
    with pytest.raises(FERError) as info:
        prepare(cfg)
    message = str(info.value)
    assert "\n" not in message and "VIRI-Sad-Vis.zip: entry 'Sad/zero.png' expands to 3.0 MB" in message
    assert "over dataset.extract.max_entry_mb=2;" in message
    extracted = data / "viri" / "extracted"
    assert not (extracted / "VIRI-Sad-Vis").exists() and not list(extracted.glob(".VIRI-Sad-Vis*"))


@pytest.mark.parametrize("value", ["0", "-5", "nan", "abc"])
def test_a_bad_extraction_cap_is_one_line_naming_the_key(tmp_path, value):
    with pytest.raises(FERError, match=rf"^dataset\.extract\.max_archive_mb='?{value}'?: use a finite number >= 1"):
        prepare(
            prepare_cfg(["dataset=viri", "dataset.download=false", f"dataset.extract.max_archive_mb={value}"], tmp_path)
        )


# --------------------------------------------------------------------------------------------------
# Folder datasets


def test_folder_dataset_pairs_converts_and_records_rejects(tmp_path):
    src = make_folder(tmp_path / "my data")
    write_image(src / "visible" / "Happy" / "extra_only_visible.png", 77, "RGBA")
    write_image(src / "visible" / "loose.jpg", 78)
    (src / "visible" / "Angry" / "Thumbs.db").write_bytes(b"x")
    (src / "infrared" / "angry" / "notes.txt").write_text("x")
    (src / "infrared" / "happy" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    data = tmp_path / "data"
    info = prepare(folder_cfg(src, data))
    digest = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:8]
    root = data / "folder" / f"my data-{digest}"
    rows = read_manifest(root / "manifest.csv")
    assert info["rows"] == len(rows) == 15 and {r["label"] for r in rows} == {"Angry", "Happy"}
    paired = [r for r in rows if r["visible"] and r["infrared"]]
    assert len(paired) == 14
    only = [r for r in rows if not r["infrared"]]
    assert [Path(r["visible"]).name for r in only] == ["extra_only_visible.png"]
    for r in rows:  # relative to the manifest, pointing at the user's files (or converted copies)
        for m in ("visible", "infrared"):
            if r[m]:
                assert not Path(r[m]).is_absolute() and (root / r[m]).is_file()
    sixteen = [r["infrared"] for r in rows if r["infrared"].startswith("converted/")]
    assert len(sixteen) == 2 and all(s.endswith(".tif.png") for s in sixteen)
    converted = np.asarray(Image.open(root / sixteen[0]))
    assert converted.dtype == np.uint8 and converted.shape == (20, 20, 3)
    assert converted.min() == 0 and converted.max() == 255  # per-image min-max
    rej = rejected(root)
    reasons = {Path(f).name: r for f, r in rej.items()}
    assert reasons["loose.jpg"] == "not in a class folder"
    assert reasons["Thumbs.db"] == "OS metadata file" and reasons["notes.txt"] == "not an image (.txt)"
    assert reasons["bad.png"].startswith("unreadable image")
    # an image without a partner is used by single-modality runs: counted as such, not rejected
    assert "extra_only_visible.png" not in reasons and info["single_modality"] == {"visible": 1}

    # fusion refuses the unpaired image, naming it under its class; visible-only uses all 15
    fusion = build_datamodule(
        compose_cfg(["dataset=folder", f"dataset.root={src}", *FAST_TRAIN], tmp_path, data).dataset
    )
    fusion.prepare_data()
    with pytest.raises(FERError, match=r"class 'Happy': 1 visible without infrared \(extra_only_visible.png\)"):
        fusion.setup("fit")
    visible = build_datamodule(
        compose_cfg(["dataset=folder", f"dataset.root={src}", "modality=visible", *FAST_TRAIN], tmp_path, data).dataset
    )
    visible.prepare_data()
    visible.setup("fit")
    assert sum(len(visible._datasets[s]) for s in ("train", "val", "test")) == 15


def test_fusion_names_an_unpaired_converted_image_by_its_own_name(tmp_path):
    src = make_folder(tmp_path / "src", n=5)
    write_image(src / "infrared" / "happy" / "png16.png", 99, "I;16")  # converted to converted/.../png16.png.png
    data = tmp_path / "data"
    prepare(folder_cfg(src, data))
    fusion = build_datamodule(
        compose_cfg(["dataset=folder", f"dataset.root={src}", *FAST_TRAIN], tmp_path, data).dataset
    )
    fusion.prepare_data()
    with pytest.raises(FERError) as exc:
        fusion.setup("fit")
    assert "class 'Happy': 1 infrared without visible (png16.png);" in str(exc.value)


def test_folder_rerun_is_idempotent_and_a_fixed_range_reconverts(tmp_path):
    src = make_folder(tmp_path / "src")
    data = tmp_path / "data"
    prepare(folder_cfg(src, data))
    root = next((data / "folder").iterdir())
    before = stamps(root)
    prepare(folder_cfg(src, data))
    assert stamps(root) == before
    prepare(folder_cfg(src, data, "dataset.sixteen_bit=fixed", "dataset.sixteen_bit_range=[0,10000]"))
    converted = [r["infrared"] for r in read_manifest(root / "manifest.csv") if r["infrared"].startswith("converted")]
    pixels = np.asarray(Image.open(root / converted[0]))
    assert pixels.min() > 0 and pixels.max() < 255  # 1000..9000 of 0..10000, not stretched


def test_two_folder_datasets_never_share_a_prepared_folder(tmp_path):
    data = tmp_path / "data"
    a = make_folder(tmp_path / "a" / "faces", n=7)
    b = make_folder(tmp_path / "b" / "faces", classes=("Sad", "Happy"), n=7)
    prepare(folder_cfg(a, data))
    prepare(folder_cfg(b, data))
    roots = sorted(p for p in (data / "folder").iterdir() if not p.name.startswith("."))
    assert len(roots) == 2 and all(r.name.startswith("faces-") for r in roots)


def test_folder_pairing_order_fallback_strict_and_unequal_counts(tmp_path):
    src = tmp_path / "src"
    for i in range(7):  # names that share nothing: only the sorted order can pair them
        write_image(src / "visible" / "Sad" / f"DSC{i:04d}.jpg", i)
        write_image(src / "infrared" / "Sad" / f"FLIR{i:04d}.jpg", 100 + i)
        write_image(src / "visible" / "Happy" / f"h{i}.jpg", 200 + i)
        write_image(src / "infrared" / "Happy" / f"h{i}.jpg", 300 + i)
    data = tmp_path / "data"
    info = prepare(folder_cfg(src, data))
    assert any("class 'Sad'" in w and "sorted order" in w for w in info["warnings"])
    rows = read_manifest(next((data / "folder").iterdir()) / "manifest.csv")
    assert ("Sad", "DSC0003.jpg", "FLIR0003.jpg") in {
        (r["label"], Path(r["visible"]).name, Path(r["infrared"]).name) for r in rows
    }
    with pytest.raises(FERError, match=r"class 'Sad'.*dataset.pairing=auto"):
        prepare(folder_cfg(src, data, "dataset.pairing=strict"))
    # one infrared file fewer: no fallback, the visible ones are kept for visible-only runs
    (src / "infrared" / "Sad" / "FLIR0006.jpg").unlink()
    prepare(folder_cfg(src, data))
    rows = read_manifest(next((data / "folder").iterdir()) / "manifest.csv")
    sad = [r for r in rows if r["label"] == "Sad"]
    assert len(sad) == 13 and sum(bool(r["visible"] and r["infrared"]) for r in sad) == 0


def test_duplicate_images_are_rejected_not_leaked(tmp_path):
    src = make_folder(tmp_path / "src")
    shutil.copy(src / "visible" / "Angry" / "s1_Angry.JPG", src / "visible" / "Happy" / "copy.JPG")
    write_image(src / "infrared" / "happy" / "copy_IR.png", 999, "L")
    data = tmp_path / "data"
    info = prepare(folder_cfg(src, data))
    root = next((data / "folder").iterdir())
    assert len(read_manifest(root / "manifest.csv")) == 14  # split without a leakage error
    rej = rejected(root)
    assert rej[str(src / "visible" / "Happy" / "copy.JPG")] == (
        f"duplicate content (same as {src / 'visible' / 'Angry' / 's1_Angry.JPG'}, class Angry)"
    )
    assert rej[str(src / "infrared" / "happy" / "copy_IR.png")].startswith("partner of a duplicate image")
    assert any("1 image(s) have the same content as an image of another class" in w for w in info["warnings"])


def test_folder_errors_are_one_line(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(FERError, match=r"dataset.root=.*no such folder"):
        prepare(folder_cfg(tmp_path / "missing", data))
    (tmp_path / "empty" / "faces").mkdir(parents=True)
    with pytest.raises(FERError, match="neither a visible/ nor an infrared/ folder"):
        prepare(folder_cfg(tmp_path / "empty", data))
    with pytest.raises(FERError, match=r"dataset\.pairing='maybe'"):
        prepare(folder_cfg(tmp_path / "empty", data, "dataset.pairing=maybe"))


def test_split_settings_apply_to_prepared_datasets(tmp_path):
    src = make_folder(tmp_path / "src", n=9)  # files s<i>_<Class>: i is the subject
    data = tmp_path / "data"
    prepare(folder_cfg(src, data, "dataset.split.holdout_regex='^s[01]_'", "dataset.split.group_regex='^(s\\d+)_'"))
    rows = read_manifest(next((data / "folder").iterdir()) / "manifest.csv")
    test = {Path(r["visible"]).name.split("_")[0] for r in rows if r["split"] == "test"}
    assert test == {"s0", "s1"}
    subjects = {}
    for r in rows:  # subject-disjoint: every subject in one split only
        subjects.setdefault(Path(r["visible"]).name.split("_")[0], set()).add(r["split"])
    assert all(len(s) == 1 for s in subjects.values())
    assert all(r["subject"] == Path(r["visible"]).name.split("_")[0] for r in rows)  # the group is the subject
    cfg = compose_cfg(
        ["dataset=folder", f"dataset.root={src}", "dataset.split.folds=3", "dataset.split.fold=1", *FAST_TRAIN],
        tmp_path,
        data,
    )
    datamodule = build_datamodule(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("fit")
    rows = read_manifest(datamodule.manifest_path)
    assert {r["fold"] for r in rows if r["split"] != "test"} == {"0", "1", "2"}
    assert len(datamodule.val_dataloader().dataset) == sum(r["fold"] == "1" for r in rows)


# --------------------------------------------------------------------------------------------------
# Bad input never changes shared data, and is one line


def test_a_refused_split_leaves_the_prepared_dataset_as_it_was(tmp_path):
    src = make_folder(tmp_path / "src")
    data = tmp_path / "data"
    prepare(folder_cfg(src, data))
    root = next((data / "folder").iterdir())
    before = {f: (root / f).read_bytes() for f in ("manifest.csv", "split.json")}
    with pytest.raises(FERError, match=r"^dataset\.split\.holdout_regex='\.\*' matches all 14 samples") as exc:
        prepare(folder_cfg(src, data, "dataset.split.holdout_regex='.*'"))
    assert "\n" not in str(exc.value)
    assert {f: (root / f).read_bytes() for f in before} == before


def test_a_single_class_is_refused_at_prepare(tmp_path):
    src = make_folder(tmp_path / "src", classes=("Angry",))
    with pytest.raises(FERError, match=r"only class 'Angry' has usable images.*at least 2 classes") as exc:
        prepare(folder_cfg(src, tmp_path / "data"))
    assert "\n" not in str(exc.value)


def test_a_single_class_manifest_is_refused_at_setup(tmp_path):
    from fer_lightning.data.dataset_datamodules import ManifestDataModule
    from fer_lightning.data.manifest import write_manifest

    root = tmp_path / "mine"
    rows = [
        {"sample_id": f"a{i}", "label": "Angry", "visible": str(write_image(root / f"a{i}.png", i).name)}
        for i in range(9)
    ]
    write_manifest(root / "manifest.csv", rows)
    datamodule = ManifestDataModule("visible", str(tmp_path), name="mine", image_size=16)
    datamodule.prepare_data()
    with pytest.raises(FERError, match=r"every visible sample is of class 'Angry'.*at least 2 classes"):
        datamodule.setup("fit")


def test_a_number_given_as_regex_is_a_pattern(tmp_path):
    src = make_folder(tmp_path / "src")  # files s<i>_<Class>...
    data = tmp_path / "data"
    prepare(folder_cfg(src, data, "dataset.split.holdout_regex=0", r"dataset.split.group_regex='^s(\d+)_'"))
    rows = read_manifest(next((data / "folder").iterdir()) / "manifest.csv")
    assert {r["subject"] for r in rows if r["split"] == "test"} == {"0"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.batch_size=0", "dataset.batch_size=0: use an integer >= 1"),
        ("dataset.batch_size=abc", "dataset.batch_size='abc': use an integer >= 1"),
        ("dataset.image_size=-1", "dataset.image_size=-1: use an integer >= 1 (the square side in pixels"),
        ("dataset.eval_batch_size=0", "dataset.eval_batch_size=0: use an integer >= 1, or null"),
        ("dataset.cache_scale=0.5", "dataset.cache_scale=0.5: use auto or a finite number >= 1"),
        ("dataset.num_workers=-2", "dataset.num_workers=-2: use auto or an integer >= 0"),
    ],
)
def test_bad_datamodule_numbers_are_one_line_naming_key_value_and_fix(tmp_path, override, message):
    with pytest.raises(FERError) as exc:
        prepare(prepare_cfg(["dataset=synthetic", override], tmp_path / "data"))
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)
    assert not (tmp_path / "data").exists()  # refused in the constructor, before anything is written


def test_one_modality_folder_lists_no_rejects_and_says_which_runs_use_it(tmp_path, capsys):
    src = make_folder(tmp_path / "src", modalities=("visible",))
    info = prepare(folder_cfg(src, tmp_path / "data"))
    root = next((tmp_path / "data" / "folder").iterdir())
    assert rejected(root) == {} and info["single_modality"] == {"visible": 14}
    out = capsys.readouterr().out
    assert "rejected: none" in out and "single-modality: 14 visible image(s) with no infrared partner" in out


def test_empty_class_folders_are_reported(tmp_path, caplog):
    src = make_folder(tmp_path / "src")
    (src / "visible" / "Sad").mkdir()
    (src / "infrared" / "sad").mkdir()
    (src / "infrared" / "sad" / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING):
        info = prepare(folder_cfg(src, tmp_path / "data"))
    for folder in (src / "visible" / "Sad", src / "infrared" / "sad"):
        message = f"{folder}: class folder holds no image; class {folder.name!r} is left out"
        assert message in info["warnings"] and message in caplog.text
