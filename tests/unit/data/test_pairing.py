"""Pairing visible with infrared images, and reading every image format to (H, W, 3) uint8."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lightning.data.images import IMAGE_EXTENSIONS, UnreadableImage, is_image_name, load_rgb
from fer_lightning.data.pairing import natural_key, normalise_stem, pair_files
from fer_lightning.data.sources.archive_table import PUBLISHED_ARCHIVES
from fer_lightning.data.sources.published import collect_images, extract_all
from fer_lightning.errors import FERError
from tests.helpers.archive_fixtures import CORRUPT_JPEG, build_published_set, specs_with_blobs

V, I = Path("/d/vis"), Path("/d/ir")  # noqa: E741


def paths(folder: Path, *names: str) -> list[Path]:
    return [folder / n for n in names]


# --------------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("IMG_001_vis.JPG", "img_001"),
        ("img_001_IR.jpg", "img_001"),
        ("IR_img_001.png", "img_001"),
        ("img-001-Infrared.tif", "img_001"),
        ("img 001 thermal.bmp", "img_001"),
        ("img.001.LWIR.png", "img_001"),
        ("S01__visible--happy.jpeg", "s01_happy"),
        ("S01_RGB_happy.jpg", "s01_happy"),
        ("therm_3.pgm", "3"),
        ("visit_3.jpg", "visit_3"),  # a token must stand alone to be removed
        ("irene.jpg", "irene"),
        ("img_vis1.jpg", "img_vis1"),
        ("a.b.c", "a_b_c"),  # not an image extension: kept as part of the name
        ("001.JPG", "001"),
    ],
)
def test_normalise_stem(name, stem):
    assert normalise_stem(name) == stem


def test_normalise_stem_takes_paths():
    assert normalise_stem(Path("/x/VIS/face_1_vis.jpg")) == "face_1"


def test_natural_key_orders_numbers_by_value():
    names = ["img10.jpg", "img2.jpg", "IMG1.jpg", "img1b.jpg", "img02.jpg"]
    assert sorted(names, key=natural_key) == ["IMG1.jpg", "img1b.jpg", "img02.jpg", "img2.jpg", "img10.jpg"]
    assert natural_key(Path("a/b2")) < natural_key(Path("a/b10"))


# --------------------------------------------------------------------------------------------------
# pair_files()


def test_pairs_by_stem_regardless_of_order_and_case():
    vis = {"happy": paths(V, "IMG_2_vis.JPG", "IMG_10_vis.JPG", "IMG_1_vis.JPG")}
    ir = {"happy": paths(I, "img_10_IR.jpg", "img_1_IR.jpg", "img_2_IR.jpg")}
    result = pair_files(vis, ir, mode="strict", require_pairs=True)
    assert [(v.name, i.name) for _, v, i in result.pairs] == [
        ("IMG_1_vis.JPG", "img_1_IR.jpg"),
        ("IMG_2_vis.JPG", "img_2_IR.jpg"),
        ("IMG_10_vis.JPG", "img_10_IR.jpg"),
    ]
    assert result.warnings == [] and all(v and i for _, v, i in result.pairs)


def test_repeated_stems_in_subject_folders_pair_by_folder():
    vis = {"sad": paths(V, "S01/1.jpg", "S02/1.jpg", "S01/2.jpg")}
    ir = {"sad": paths(I, "S02/1_ir.png", "S01/2_ir.png", "S01/1_ir.png")}
    result = pair_files(vis, ir, mode="strict", require_pairs=True)
    pairs = {(v.parent.name, v.stem): (i.parent.name, i.name) for _, v, i in result.pairs}
    assert pairs == {
        ("S01", "1"): ("S01", "1_ir.png"),
        ("S02", "1"): ("S02", "1_ir.png"),
        ("S01", "2"): ("S01", "2_ir.png"),
    }


def test_duplicate_normalised_stem_is_an_error_naming_both():
    vis = {"angry": paths(V, "a_1.jpg", "a_1_vis.png")}
    ir = {"angry": paths(I, "a_1.jpg", "a_2.jpg")}
    with pytest.raises(FERError) as info:
        pair_files(vis, ir, mode="auto", require_pairs=True)
    message = str(info.value)
    assert "a_1.jpg" in message and "a_1_vis.png" in message and "'angry'" in message


def test_equal_counts_with_unmatched_names_fall_back_to_sorted_order():
    vis = {"fear": paths(V, "fear_10.JPG", "fear_2.JPG", "fear_1.JPG"), "happy": paths(V, "h_1.jpg")}
    ir = {"fear": paths(I, "T2.png", "T10.png", "T1.png"), "happy": paths(I, "h_1_ir.jpg")}
    result = pair_files(vis, ir, mode="auto", require_pairs=True)
    fear = [(v.name, i.name) for label, v, i in result.pairs if label == "fear"]
    assert fear == [("fear_1.JPG", "T1.png"), ("fear_2.JPG", "T2.png"), ("fear_10.JPG", "T10.png")]
    assert len(result.warnings) == 1
    assert "'fear'" in result.warnings[0] and "sorted order" in result.warnings[0]
    assert "contact_sheet.png" in result.warnings[0]


def test_partial_name_match_is_not_shifted_into_order_pairing():
    """One missing file on each side must not mispair the whole class (the study's listing-order defect)."""
    vis = {"sad": paths(V, "img_001.jpg", "img_002.jpg", "img_003.jpg", "img_004.jpg", "img_005.jpg")}
    ir = {"sad": paths(I, "img_002.jpg", "img_003.jpg", "img_004.jpg", "img_005.jpg", "img_006.jpg")}
    result = pair_files(vis, ir, mode="auto", require_pairs=False)
    pairs = [(v.name, i.name) for _, v, i in result.pairs if v and i]
    assert pairs == [(f"img_00{k}.jpg", f"img_00{k}.jpg") for k in range(2, 6)]
    alone = {(label, v, i) for label, v, i in result.pairs if not (v and i)}
    assert alone == {("sad", V / "img_001.jpg", None), ("sad", None, I / "img_006.jpg")}
    assert all("sorted order" not in w for w in result.warnings)


def test_strict_mode_refuses_unmatched_names():
    vis = {"fear": paths(V, "fear_1.JPG", "fear_2.JPG")}
    ir = {"fear": paths(I, "T1.png", "T2.png")}
    with pytest.raises(FERError) as info:
        pair_files(vis, ir, mode="strict", require_pairs=False)
    message = str(info.value)
    assert "\n" not in message and "'fear'" in message and "fear_1.JPG" in message and "T1.png" in message
    assert "dataset.pairing=auto" in message


def test_unequal_counts_for_fusion_list_unpaired_files_per_class():
    vis = {
        "sad": paths(V, *[f"s{i}_vis.jpg" for i in range(1, 11)]),
        "angry": paths(V, "a1.jpg", "a2.jpg"),
    }
    ir = {"sad": paths(I, "s1_ir.jpg", "s2_ir.jpg"), "angry": paths(I, "a1.jpg", "a2.jpg", "a3.jpg")}
    with pytest.raises(FERError) as info:
        pair_files(vis, ir, mode="auto", require_pairs=True)
    message = str(info.value)
    assert "\n" not in message
    assert "class 'sad': 8 visible without infrared" in message and "and 3 more" in message
    assert "class 'angry': 1 infrared without visible (ir/a3.jpg)" in message


def test_class_missing_in_one_modality_is_unpaired_for_fusion():
    with pytest.raises(FERError, match="'neutral': 1 visible without infrared"):
        pair_files({"neutral": paths(V, "n1.jpg")}, {}, mode="auto", require_pairs=True)


def test_single_modality_runs_keep_every_image():
    vis = {"sad": paths(V, "s1_vis.jpg", "s2_vis.jpg", "s3_vis.jpg"), "happy": paths(V, "h1.jpg")}
    ir = {"sad": paths(I, "s2_ir.jpg"), "angry": paths(I, "x.jpg")}
    result = pair_files(vis, ir, mode="strict", require_pairs=False)
    rows = [(label, v and v.name, i and i.name) for label, v, i in result.pairs]
    assert rows == [
        ("angry", None, "x.jpg"),
        ("happy", "h1.jpg", None),
        ("sad", "s1_vis.jpg", None),
        ("sad", "s2_vis.jpg", "s2_ir.jpg"),
        ("sad", "s3_vis.jpg", None),
    ]
    assert len(result.warnings) == 1


def test_visible_only_without_infrared_lists():
    vis = {"sad": paths(V, "b.jpg", "a.jpg")}
    result = pair_files(vis, {}, mode="auto", require_pairs=False)
    assert [(v.name, i) for _, v, i in result.pairs] == [("a.jpg", None), ("b.jpg", None)]
    assert result.warnings == []


def test_unknown_mode():
    with pytest.raises(FERError, match="auto or strict"):
        pair_files({}, {}, mode="fuzzy", require_pairs=True)


# --------------------------------------------------------------------------------------------------
# Archives -> extraction -> pairing, end to end on archives shaped like the published ones


@pytest.mark.parametrize("dataset", ["viri", "nvie"])
def test_published_layout_extracts_and_pairs(tmp_path, dataset):
    raw = tmp_path / "raw"
    blobs = build_published_set(raw, dataset, images_per_class=4, corrupt=True)
    specs = specs_with_blobs(dataset, blobs)
    extracted = extract_all([(s, raw / s.name) for s in specs], tmp_path / "extracted")
    images = collect_images(extracted)
    readable = {}
    for modality, by_label in images.items():
        readable[modality] = {}
        for label, files in by_label.items():
            kept = []
            for f in files:
                try:
                    assert load_rgb(f).shape[2] == 3
                    kept.append(f)
                except UnreadableImage:
                    assert f.name == "broken.jpg"
            readable[modality][label] = kept
    result = pair_files(readable["visible"], readable["infrared"], mode="auto", require_pairs=True)
    labels = {s.label for s in PUBLISHED_ARCHIVES[dataset]}
    assert len(result.pairs) == 4 * len(labels)
    assert {label for label, _, _ in result.pairs} == labels
    if dataset == "viri":
        assert result.warnings == []
        assert all(normalise_stem(v.name) == normalise_stem(i.name) for _, v, i in result.pairs)
    else:  # NVIE fear names differ between modalities; the split happy/disgust parts pair by name
        assert len(result.warnings) == 1 and "'fear'" in result.warnings[0]
        happy = [(v.parent.parent.name, v.stem, i.stem) for label, v, i in result.pairs if label == "happy"]
        assert happy == [
            ("NVIE-happy1-Vis", "1", "1"),
            ("NVIE-happy1-Vis", "2", "2"),
            ("NVIE-happy2-Vis", "3", "3"),
            ("NVIE-happy2-Vis", "4", "4"),
        ]


def test_specs_with_blobs_keeps_table_fields():
    blobs = {s.name: "0" * 40 for s in PUBLISHED_ARCHIVES["nvie"]}
    expected = [dataclasses.replace(s, blob_id="0" * 40) for s in PUBLISHED_ARCHIVES["nvie"]]
    assert expected == specs_with_blobs("nvie", blobs)


# --------------------------------------------------------------------------------------------------
# images.load_rgb()


def _save(tmp_path: Path, img: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_image_extensions_are_lower_case_and_matched_in_any_case():
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert is_image_name("A.JPG") and is_image_name("b.TiFf") and not is_image_name("c.txt")


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = load_rgb(_save(tmp_path, Image.fromarray(gray, "L"), "g.png"))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out == gray[:, :, None]).all()


def test_palette_image_is_expanded(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 2), 1)
    out = load_rgb(_save(tmp_path, img, "p.png"))
    assert out.shape == (4, 4, 3)
    assert tuple(out[2, 1]) == (255, 0, 0) and tuple(out[0, 0]) == (0, 0, 0)


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[255, 0], [128, 255]]
    out = load_rgb(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png"))
    assert out[0, 0].tolist() == [200] * 3 and out[0, 1].tolist() == [0] * 3
    assert out[1, 0].tolist() == [100] * 3  # 200 * 128/255


def test_cmyk_jpeg_is_converted(tmp_path):
    out = load_rgb(_save(tmp_path, Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "c.jpg", quality=95))
    assert out.shape == (4, 4, 3) and out[0, 0, 0] > 200 and out[0, 0, 1] < 60


def _sixteen_bit(tmp_path: Path, values: np.ndarray) -> Path:
    return _save(tmp_path, Image.fromarray(values.astype(np.uint16)), "t.png")


def test_sixteen_bit_minmax(tmp_path):
    values = np.array([[1000, 2000], [3000, 1500]])
    out = load_rgb(_sixteen_bit(tmp_path, values), sixteen_bit="minmax")
    assert out[..., 0].tolist() == [[0, 128], [255, 64]]
    assert (out[..., 0] == out[..., 2]).all()


def test_sixteen_bit_constant_image_is_black(tmp_path):
    out = load_rgb(_sixteen_bit(tmp_path, np.full((3, 3), 4242)), sixteen_bit="minmax")
    assert out.shape == (3, 3, 3) and not out.any()


def test_sixteen_bit_fixed_range_clips_and_scales(tmp_path):
    values = np.array([[0, 1000], [2000, 60000]])
    out = load_rgb(_sixteen_bit(tmp_path, values), sixteen_bit="fixed", fixed_range=(1000, 3000))
    assert out[..., 0].tolist() == [[0, 0], [128, 255]]
    full = load_rgb(_sixteen_bit(tmp_path, values), sixteen_bit="fixed")
    assert full[1, 1, 0] == round(60000 * 255 / 65535)


def test_big_endian_sixteen_bit_tiff(tmp_path):
    img = Image.frombytes("I;16B", (2, 1), np.array([0, 65535], dtype=">u2").tobytes())
    out = load_rgb(_save(tmp_path, img, "t.tif"), sixteen_bit="fixed")
    assert out[0, :, 0].tolist() == [0, 255]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)  # stored 4 wide, 2 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    path = _save(tmp_path, Image.fromarray(pixels), "o.jpg", exif=exif)
    assert load_rgb(path).shape == (4, 2, 3)


@pytest.mark.parametrize("content", [CORRUPT_JPEG, b"", b"not an image at all"])
def test_corrupt_image_raises_with_path(tmp_path, content):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage) as info:
        load_rgb(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, FERError)


def test_truncated_png_raises(tmp_path):
    good = _save(tmp_path, Image.fromarray(np.arange(1024, dtype=np.uint8).reshape(32, 32) % 251, "L"), "g.png")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match=r"g\.png"):
        load_rgb(good)


def test_missing_file_raises(tmp_path):
    with pytest.raises(UnreadableImage, match=r"nope\.png"):
        load_rgb(tmp_path / "nope.png")
