"""Near-duplicates: found at prepare time, kept in one split (group), listed (warn), reported. The warning when a
model is tested on near-copies of what it trained on: tests/integration/test_near_duplicates_training.py."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from fer_lightning.analysis.results_table import report
from fer_lightning.data import near_duplicates as nd
from fer_lightning.data.manifest import COLUMNS, ensure_splits, read_manifest
from fer_lightning.data.split_drawing import SplitSpec, apply_fold, assign_splits, check_splits
from fer_lightning.data.synthetic import generate
from fer_lightning.errors import FERError
from fer_lightning.prepare import prepare
from tests.conftest import CONF, TINY
from tests.helpers.settings import COPIES


def _base(sample_id: str) -> str:
    return sample_id.split("_copy")[0]


def _splits_of_clusters(rows: list[dict]) -> dict[str, set[str]]:
    out = defaultdict(set)
    for r in rows:
        if r[nd.COLUMN]:
            out[r[nd.COLUMN]].add(r["split"])
    return out


def _prepare(data: Path, *extra: str) -> tuple[dict, Path]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["dataset=synthetic", *COPIES, *extra, f"paths.data_dir={data}"])
    info = prepare(cfg)
    return info, data / "synthetic"


# --------------------------------------------------------------------------------------------------
# Finding them


def test_the_threshold_separates_copies_from_other_faces_with_a_margin(tmp_path):
    # synthetic_small's size: 96 px
    rows = generate(tmp_path, n_subjects=4, samples_per_class=2, image_size=96, difficulty={"near_duplicates": 1})
    assert sum("_copy1" in r["sample_id"] for r in rows) == len(rows) // 2
    n = len(rows)
    base = np.array([_base(r["sample_id"]) for r in rows])
    subject = np.array([r["subject"] for r in rows])
    closest = np.full((n, n), np.inf)
    for camera in ("visible", "infrared"):
        thumbs = nd.thumbnails(tmp_path, [(r[camera], tmp_path / r[camera]) for r in rows])
        i, j, distance = nd.distances(thumbs, coarse_threshold=np.inf)  # every pair
        closest[i, j] = np.minimum(closest[i, j], distance)  # either camera makes a pair
    iu = np.triu_indices(n, 1)
    pair = closest[iu]
    copies = (base[:, None] == base[None, :])[iu]
    others = (subject[:, None] != subject[None, :])[iu]
    assert pair[copies].max() < nd.THRESHOLD
    assert pair[others].min() > 3 * nd.THRESHOLD
    found = nd.clusters(tmp_path, rows)
    members = defaultdict(set)
    for r, c in zip(rows, found, strict=True):
        members[c].add(_base(r["sample_id"]))
    assert "" not in members and all(len(m) == 1 for m in members.values())  # each sample with its copy, alone
    assert len(members) == n // 2


def test_the_knob_adds_copies_and_leaves_the_samples_as_they_were(tmp_path):
    plain = generate(tmp_path / "plain", n_subjects=2, samples_per_class=2, image_size=32)
    half = generate(
        tmp_path / "half", n_subjects=2, samples_per_class=2, image_size=32, difficulty={"near_duplicates": 0.5}
    )
    copies = [r for r in half if "_copy" in r["sample_id"]]
    assert 0 < len(copies) < len(plain) and all(r["sample_id"].endswith("_copy1") for r in copies)
    assert [r for r in half if "_copy" not in r["sample_id"]] == plain
    for r in plain:
        for camera in ("visible", "infrared"):
            assert (tmp_path / "half" / r[camera]).read_bytes() == (tmp_path / "plain" / r[camera]).read_bytes()


def test_faces_without_copies_have_no_near_duplicates(tmp_path):
    rows = generate(tmp_path, n_subjects=6, samples_per_class=3, image_size=40)
    assert nd.clusters(tmp_path, rows) == [""] * len(rows)


def test_either_camera_makes_a_pair_and_flat_images_join_only_when_identical(tmp_path):
    rows = generate(tmp_path, n_subjects=3, samples_per_class=2, image_size=48, difficulty={"near_duplicates": 1})
    for r in rows:  # the copies lose their visible image: their infrared one still makes them near-duplicates
        if "_copy" in r["sample_id"]:
            r["visible"] = ""
    found = nd.clusters(tmp_path, rows)
    assert all(found[k] and found[k] == found[k + 1] for k in range(0, len(rows), 2))
    # a camera without any image (a visible-only dataset): the originals alone, none a copy of another
    visible_only = [dict(r, infrared="") for r in rows if r["visible"]]
    assert nd.clusters(tmp_path, visible_only) == [""] * len(visible_only)
    rng = np.random.default_rng(0)
    for name, pixels in (("black", 0), ("black_too", 0), ("dark", rng.integers(0, 3, (48, 48, 3)))):
        Image.fromarray(np.full((48, 48, 3), pixels, dtype=np.uint8)).save(tmp_path / f"{name}.png")
    flat = [{"sample_id": name, "visible": f"{name}.png", "infrared": ""} for name in ("black", "black_too", "dark")]
    # nearly flat frames have no content to compare; identical ones are the same image all the same
    assert nd.clusters(tmp_path, [*rows, *flat])[-3:] == [str(len(rows) // 2 + 1)] * 2 + [""]


def test_thumbnails_are_cached_by_content(tmp_path, monkeypatch):
    rows = generate(tmp_path, n_subjects=2, samples_per_class=1, image_size=32)
    files = [(r["visible"], tmp_path / r["visible"]) for r in rows]
    first = nd.thumbnails(tmp_path, files)
    assert (tmp_path / nd.CACHE).is_file()
    monkeypatch.setattr(nd, "thumbnail", lambda path: pytest.fail(f"{path} decoded again"))
    assert np.array_equal(nd.thumbnails(tmp_path, files), first)


# --------------------------------------------------------------------------------------------------
# Splitting with them


def _clustered_rows(subjects: int = 12) -> list[dict]:
    """Three classes x 3 samples per subject; clusters join each subject's sample 0 with the next subject's."""
    rows = []
    for s in range(subjects):
        for c in "ABC":
            for k in range(3):
                cluster = f"{s}{c}" if k == 0 else (f"{s - 1}{c}" if k == 1 and s else "")
                rows.append(
                    {
                        "sample_id": f"s{s:02d}_{c}_{k}",
                        "label": c,
                        "visible": f"visible/s{s:02d}_{c}_{k}.png",
                        "infrared": "",
                        "subject": "",
                        nd.COLUMN: cluster,
                    }
                )
    return rows


def test_group_keeps_every_cluster_in_one_split_and_joins_the_subjects_it_spans():
    rows = _clustered_rows()
    grouped = assign_splits(rows, SplitSpec(near_duplicates="group"))
    assert all(len(s) == 1 for s in _splits_of_clusters(grouped).values())
    assert any(len(s) > 1 for s in _splits_of_clusters(assign_splits(rows, SplitSpec(near_duplicates="warn"))).values())
    subjects = assign_splits(rows, SplitSpec(near_duplicates="group", group_regex=r"^(s\d+)_"))
    split_of = defaultdict(set)
    for r in subjects:
        split_of[r["subject"]].add(r["split"])
    # every subject is whole, and subjects a cluster links share their split
    assert all(len(s) == 1 for s in split_of.values())
    assert all(len(s) == 1 for s in _splits_of_clusters(subjects).values())
    assert len({next(iter(split_of[f"s{s:02d}"])) for s in range(12)}) == 1  # the chain links all twelve


def test_without_clusters_group_draws_the_split_off_draws():
    rows = [dict(r, **{nd.COLUMN: ""}) for r in _clustered_rows(20)]
    for regex in (None, r"^(s\d+)_"):
        off = assign_splits(rows, SplitSpec(group_regex=regex, near_duplicates="off"))
        group = assign_splits(rows, SplitSpec(group_regex=regex, near_duplicates="group"))
        assert [r["split"] for r in off] == [r["split"] for r in group]


def test_holdout_and_folds_keep_clusters_whole():
    rows = _clustered_rows()
    held = assign_splits(rows, SplitSpec(near_duplicates="group", holdout_regex=r"^s0[0-2]_"))
    assert all(len(s) == 1 for s in _splits_of_clusters(held).values())
    # s02's sample 0 shares a cluster with s03's sample 1, which the pattern does not match: held out with it
    assert {r["sample_id"] for r in held if r["split"] == "test"} >= {"s03_A_1", "s03_B_1", "s03_C_1"}
    rows = assign_splits(_clustered_rows(24), SplitSpec(near_duplicates="group", folds=3))
    assert {r["fold"] for r in rows if r["split"] != "test"} == {"0", "1", "2"}
    for fold in range(3):
        assert all(len(s) == 1 for s in _splits_of_clusters(apply_fold(rows, 3, fold)).values())


def test_a_config_without_the_key_is_drawn_as_before_and_bad_values_are_one_line():
    assert SplitSpec.from_config({}).near_duplicates == "warn"  # the split it trained on, and a warning
    assert SplitSpec.from_config({}).to_json() == SplitSpec.from_config({"near_duplicates": "off"}).to_json()
    assert "near_duplicates" not in SplitSpec.from_config({}).to_json()  # what manifests prepared before recorded
    assert SplitSpec.from_config({"near_duplicates": False}).near_duplicates == "off"
    with pytest.raises(FERError, match=r"^dataset\.split\.near_duplicates='grup': use group .*, warn .* or off$"):
        SplitSpec.from_config({"near_duplicates": "grup"})


def test_a_manifest_prepared_before_is_reused_as_it_is_unless_group_redraws_it(tmp_path):
    rows = generate(tmp_path, n_subjects=4, samples_per_class=2, image_size=48, difficulty={"near_duplicates": 1})
    old_columns = [c for c in COLUMNS if c != nd.COLUMN]  # a manifest written before the column existed
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(assign_splits([dict(r, fold="") for r in rows], SplitSpec(seed=0)))
    (tmp_path / "split.json").write_text(json.dumps(SplitSpec(seed=0).to_json()))
    before = (tmp_path / "manifest.csv").read_bytes()
    reused = ensure_splits(tmp_path, SplitSpec(seed=0, near_duplicates="warn"), log=pytest.fail)
    assert (tmp_path / "manifest.csv").read_bytes() == before  # a checkpoint's manifest hash still matches
    assert nd.straddling(reused)  # the clusters are known all the same
    tested = [r["sample_id"] for r in reused if r["split"] == "test"]
    assert nd.shared_share(reused, tested) > 0
    unchecked = ensure_splits(tmp_path, SplitSpec(seed=0, near_duplicates="off"), log=pytest.fail)
    assert nd.COLUMN not in unchecked[0] and nd.shared_share(unchecked, tested) is None  # off: not looked for
    said = []
    grouped = ensure_splits(tmp_path, SplitSpec(seed=0, near_duplicates="group"), log=said.append)
    assert said and not nd.straddling(grouped)
    assert all(r[nd.COLUMN] for r in read_manifest(tmp_path / "manifest.csv"))


def test_a_split_group_cannot_draw_names_near_duplicates():
    rows = [dict(r, **{nd.COLUMN: "1"}) for r in _clustered_rows(3)]  # everything in one cluster
    spec = SplitSpec(near_duplicates="group")
    with pytest.raises(FERError, match=r"^dataset\.split\.near_duplicates=group keeps 27 samples in 1 groups.*=warn"):
        check_splits(assign_splits(rows, spec), spec)


# --------------------------------------------------------------------------------------------------
# prepare: the column, the counts, the listing


def test_prepare_groups_counts_and_lists(tmp_path, capsys, caplog):
    info, root = _prepare(tmp_path / "data")
    rows = read_manifest(root / "manifest.csv")
    assert nd.COLUMN in rows[0]
    assert all(len(s) == 1 for s in _splits_of_clusters(rows).values())
    bases = {_base(r["sample_id"]) for r in rows}
    assert len({r[nd.COLUMN] for r in rows}) == len(bases)  # one cluster per sample and its copies
    state = json.loads((root / "prepare.json").read_text())["near_duplicates"]
    assert state["clusters"] == len(bases) and state["share"] == 1.0 and state["threshold"] == nd.THRESHOLD
    assert info["near_duplicates"] == state
    out = capsys.readouterr().out
    assert f"near-duplicates: {len(bases)} cluster(s) holding {len(rows)} samples (100.0 %)" in out
    assert "threshold 0.01" in out and "near_duplicates=group: each cluster stays in one split" in out
    assert not (root / nd.LISTING).exists()

    caplog.clear()
    _prepare(tmp_path / "data", "dataset.split.near_duplicates=warn")
    rows = read_manifest(root / "manifest.csv")
    cut = nd.straddling(rows)
    assert cut
    with open(root / nd.LISTING, newline="") as f:
        listed = list(csv.DictReader(f))
    assert {r[nd.COLUMN] for r in listed} == set(cut)
    assert {r["sample_id"] for r in listed} == {r["sample_id"] for c in cut.values() for m in c.values() for r in m}
    warned = [m for m in caplog.messages if "straddle" in m]
    assert len(warned) == 1 and f"{len(cut)} near-duplicate cluster(s)" in warned[0] and nd.LISTING in warned[0]

    _prepare(tmp_path / "data", "dataset.split.near_duplicates=off")
    assert [r["split"] for r in read_manifest(root / "manifest.csv")] == [r["split"] for r in rows]  # as warn
    assert not (root / nd.LISTING).exists()


def test_the_default_synthetic_set_has_none_and_its_split_is_unchanged(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["dataset=synthetic", *TINY, f"paths.data_dir={tmp_path}"]
        group = prepare(compose(config_name="prepare", overrides=overrides))
        rows = read_manifest(tmp_path / "synthetic" / "manifest.csv")
        prepare(compose(config_name="prepare", overrides=[*overrides, "dataset.split.near_duplicates=off"]))
    assert group["near_duplicates"]["clusters"] == 0
    assert [r["split"] for r in read_manifest(tmp_path / "synthetic" / "manifest.csv")] == [r["split"] for r in rows]


# --------------------------------------------------------------------------------------------------
# train, evaluate and report say so


def test_report_names_runs_written_before_the_check(tmp_path, capsys):
    results = {
        "dataset": "synthetic",
        "modality": "visible",
        "seed": 0,
        "test": {"n": 10, "accuracy": 0.5, "accuracy_ci95": [0.2, 0.8], "f1_macro": 0.5, "f1_weighted": 0.5},
    }
    for name, extra in (("old", {}), ("new", {"near_duplicate_test_share": 0.0})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**results, **extra}))
    report(tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "near-duplicate" in line]
    assert len(lines) == 1 and "1 run(s) have no near_duplicate_test_share" in lines[0] and "old" in lines[0]
