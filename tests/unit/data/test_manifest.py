from collections import Counter

import pytest

from fer_lightning.data.manifest import ensure_splits, read_manifest, write_manifest
from fer_lightning.data.split_drawing import SplitSpec, apply_fold, assign_splits, check_leakage
from fer_lightning.errors import FERError


def make_rows(subjects=20, classes=("A", "B", "C"), per=3):
    return [
        {
            "sample_id": f"s{s:02d}_{c}_{k}",
            "label": c,
            "visible": f"visible/{c}/s{s:02d}_{c}_{k}.png",
            "infrared": f"infrared/{c}/s{s:02d}_{c}_{k}.png",
            "subject": f"s{s:02d}",
        }
        for s in range(subjects)
        for c in classes
        for k in range(per)
    ]


def test_stratified_split_is_deterministic_and_near_70_15_15():
    rows = make_rows()
    a = assign_splits(rows, SplitSpec(seed=0))
    b = assign_splits(rows, SplitSpec(seed=0))
    c = assign_splits(rows, SplitSpec(seed=1))
    assert [r["split"] for r in a] == [r["split"] for r in b]
    assert [r["split"] for r in a] != [r["split"] for r in c]
    per_class = Counter((r["label"], r["split"]) for r in a)
    for label in "ABC":
        assert per_class[(label, "train")] == 42 and per_class[(label, "val")] == 9 and per_class[(label, "test")] == 9


def test_group_regex_gives_subject_disjoint_splits():
    rows = assign_splits(make_rows(), SplitSpec(group_regex=r"^(s\d+)_"))
    subjects = {}
    for r in rows:
        subjects.setdefault(r["subject"], set()).add(r["split"])
    assert all(len(s) == 1 for s in subjects.values())
    counts = Counter(r["split"] for r in rows)
    assert counts["test"] >= 18 and counts["val"] >= 18


def test_holdout_regex_names_the_test_set():
    rows = assign_splits(make_rows(), SplitSpec(holdout_regex=r"^s0[0-2]_"))
    test = {r["subject"] for r in rows if r["split"] == "test"}
    assert test == {"s00", "s01", "s02"}
    assert {r["split"] for r in rows if r["subject"] not in test} == {"train", "val"}


def test_folds_cover_train_val_once_and_keep_test_fixed():
    spec = SplitSpec(folds=5, group_regex=r"^(s\d+)_")
    rows = assign_splits(make_rows(), spec)
    test_ids = {r["sample_id"] for r in rows if r["split"] == "test"}
    seen_val = Counter()
    for fold in range(5):
        folded = apply_fold(rows, 5, fold)
        assert {r["sample_id"] for r in folded if r["split"] == "test"} == test_ids
        seen_val.update(r["sample_id"] for r in folded if r["split"] == "val")
    assert set(seen_val) == {r["sample_id"] for r in rows} - test_ids
    assert set(seen_val.values()) == {1}
    with pytest.raises(FERError, match=r"fold=5"):
        apply_fold(rows, 5, 5)


def test_leakage_check_refuses_identical_images_in_two_splits():
    rows = [
        {"sample_id": "a", "split": "train", "visible": "v/a.png", "visible_sha1": "x", "infrared": ""},
        {"sample_id": "b", "split": "test", "visible": "v/b.png", "visible_sha1": "x", "infrared": ""},
    ]
    with pytest.raises(FERError, match=r"leakage: v/b\.png"):
        check_leakage(rows)
    rows[1]["split"] = "train"
    check_leakage(rows)


def write_unsplit(folder, rows):
    for r in rows:
        for m in ("visible", "infrared"):
            p = folder / r[m]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(f"{r[m]}".encode())
    write_manifest(folder / "manifest.csv", [dict(r, split="") for r in rows])


def test_ensure_splits_persists_and_redraws_only_on_change(tmp_path):
    rows = make_rows(subjects=6)
    write_unsplit(tmp_path, rows)
    first = ensure_splits(tmp_path, SplitSpec(seed=0), log=lambda m: None)
    mtime = (tmp_path / "manifest.csv").stat().st_mtime_ns
    again = ensure_splits(tmp_path, SplitSpec(seed=0), log=lambda m: None)
    assert [r["split"] for r in first] == [r["split"] for r in again]
    assert (tmp_path / "manifest.csv").stat().st_mtime_ns == mtime
    said = []
    ensure_splits(tmp_path, SplitSpec(seed=5), log=said.append)
    assert said and "re-drawing" in said[0]
    assert all(r["visible_sha1"] for r in read_manifest(tmp_path / "manifest.csv"))


def test_bad_split_settings_are_one_line_errors():
    with pytest.raises(FERError, match="ratios"):
        SplitSpec.from_config({"ratios": [0.5, 0.5, 0.5]})
    with pytest.raises(FERError, match="not a valid regex"):
        SplitSpec.from_config({"group_regex": "("})
    with pytest.raises(FERError, match=r"unknown dataset\.split"):
        SplitSpec.from_config({"sed": 1})
    with pytest.raises(FERError, match="no capture group"):
        assign_splits(make_rows(2), SplitSpec(group_regex=r"^zz(\d)"))


def test_regex_keys_accept_numbers_and_a_bad_pattern_is_one_line_naming_the_key():
    # Hydra reads holdout_regex=20240303 as an int
    spec = SplitSpec.from_config({"holdout_regex": 20240303, "group_regex": 7})
    assert spec.holdout_regex == "20240303" and spec.group_regex == "7"
    with pytest.raises(FERError, match=r"^dataset\.split\.holdout_regex='\[' is not a valid regex .*quot") as exc:
        SplitSpec.from_config({"holdout_regex": "["})
    assert "\n" not in str(exc.value)


def test_group_regex_fills_the_subject_column():
    rows = [dict(r, subject="") for r in make_rows(subjects=6)]
    rows.append(dict(rows[0], sample_id="x", visible="visible/A/other.png", infrared="infrared/A/other.png"))
    out = assign_splits(rows, SplitSpec(group_regex=r"^(s\d+)_", holdout_regex="^(s00_|other)"))
    assert [r["subject"] for r in out[:-1]] == [r["sample_id"][:3] for r in out[:-1]]
    assert out[-1]["split"] == "test" and out[-1]["subject"] == ""  # held out, and no group: unknown
    assert all(r["subject"] == "" for r in assign_splits(rows, SplitSpec()))  # no regex: nothing invented


@pytest.mark.parametrize(
    "spec, key",
    [
        (SplitSpec(holdout_regex=".*"), r"holdout_regex='\.\*' matches all 54 samples"),
        (SplitSpec(holdout_regex="_A_"), r"holdout_regex='_A_' matches every sample of class\(es\) \['A'\]"),
        (
            SplitSpec(ratios=(1.0, 0.0, 0.0)),
            r"ratios=\[1\.0, 0\.0, 0\.0\] leaves the val/test split empty for 54 samples; give the val/test split a "
            r"share \(a ratio > 0\)$",
        ),
        (  # every split has a share, but too small a one for 54 samples
            SplitSpec(ratios=(0.98, 0.01, 0.01)),
            r"ratios=\[0\.98, 0\.01, 0\.01\] leaves the val/test split empty for 54 samples; too few samples for "
            r"these ratios: add samples, or raise the val/test share$",
        ),
        (SplitSpec(group_regex="^(s)"), r"group_regex='\^\(s\)' finds 1 group"),
        (SplitSpec(folds=50), r"folds=50: .* fewer folds"),
    ],
)
def test_a_split_no_run_can_use_is_refused_and_the_manifest_is_left_as_it_was(tmp_path, spec, key):
    write_unsplit(tmp_path, make_rows(subjects=6))
    ensure_splits(tmp_path, SplitSpec(seed=0), log=lambda m: None)
    before = {f: (tmp_path / f).read_bytes() for f in ("manifest.csv", "split.json")}
    said = []
    with pytest.raises(FERError, match=rf"^dataset\.split\.{key}") as exc:
        ensure_splits(tmp_path, spec, log=said.append)
    assert "\n" not in str(exc.value) and not said  # nothing announced as re-drawn
    assert {f: (tmp_path / f).read_bytes() for f in before} == before
