"""The procedural visible + infrared face generator: determinism, layout on disk, and that it draws faces."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from PIL import Image

from fer_lightning.data import synthetic
from fer_lightning.data.synthetic import (
    CLASSES,
    DIFFICULTIES,
    PALETTES,
    PLANTED_FACES,
    Knobs,
    Subject,
    generate,
    render_sample,
)

TINY = dict(n_subjects=2, samples_per_class=2, image_size=32)
NO_FAILURES = dict(vis_bad_light_frac=0.0, occlusion_frac=0.0, ir_artifact_frac=0.0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, rel: str) -> np.ndarray:
    with Image.open(root / rel) as im:
        assert im.mode == "RGB"
        return np.asarray(im, dtype=np.float64)


def render_pair(*args) -> tuple[np.ndarray, np.ndarray]:
    """The (visible, infrared) images of :func:`render_sample`, without its scene."""
    return render_sample(*args)[:2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("tiny")
    return root, generate(root, **TINY, seed=3)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny):
    root, _ = tiny
    again = tmp_path / "again"
    generate(again, **TINY, seed=3)
    assert _files(again) == _files(root)

    other = tmp_path / "other"
    generate(other, **TINY, seed=4)
    a, b = _files(root), _files(other)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


def test_sample_does_not_depend_on_what_else_is_generated(tmp_path, tiny):
    root, _ = tiny
    generate(tmp_path, n_subjects=1, samples_per_class=1, image_size=32, seed=3)
    small = {k: v for k, v in _files(tmp_path).items() if k.endswith(".png")}
    big = _files(root)
    assert len(small) == 2 * len(CLASSES)
    assert all(big[k] == v for k, v in small.items())


def test_rows_match_files(tiny):
    root, rows = tiny
    assert len(rows) == TINY["n_subjects"] * len(CLASSES) * TINY["samples_per_class"]
    assert len({r["sample_id"] for r in rows}) == len(rows)
    on_disk = {k for k in _files(root) if k.endswith(".png")}
    assert on_disk == {r[m] for r in rows for m in ("visible", "infrared")}
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    for r in rows:
        assert set(r) == {"sample_id", "label", "visible", "infrared", "subject"}
        assert r["label"] in CLASSES
        assert r["subject"] in {"s000", "s001"}
        assert r["sample_id"].startswith(f"{r['subject']}_{r['label']}_")
        assert r["visible"] == f"visible/{r['label']}/{r['sample_id']}.png"
        assert r["infrared"] == f"infrared/{r['label']}/{r['sample_id']}.png"
        for m in ("visible", "infrared"):
            with Image.open(root / r[m]) as im:
                assert im.mode == "RGB" and im.size == (TINY["image_size"],) * 2


def test_infrared_is_a_palette_image_and_differs_from_visible(tiny):
    root, rows = tiny
    lut = PALETTES["iron"].astype(np.float64)
    for r in rows[:6]:
        ir = _load(root, r["infrared"]).reshape(-1, 3)
        dist = np.abs(ir[:, None, :] - lut[None, :, :]).sum(axis=2).min(axis=1)
        assert dist.max() <= 3, "infrared pixels must be colours of the iron palette"
        vis = _load(root, r["visible"])
        assert np.abs(vis - ir.reshape(vis.shape)).mean() > 20
        vis_flat = vis.reshape(-1, 3)
        assert np.abs(vis_flat[:, None, :] - lut[None, :, :]).sum(axis=2).min(axis=1).mean() > 10


@pytest.mark.parametrize("palette", sorted(PALETTES))
def test_palettes_are_luts_used_by_the_renderer(palette):
    lut = PALETTES[palette]
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert len(np.unique(lut, axis=0)) > 200  # a smooth ramp, not a few flat colours
    subject = Subject.sample(np.random.default_rng(0))
    _, ir = render_pair(np.random.default_rng(1), subject, "Happy", 32, palette, DIFFICULTIES["easy"])
    colours = {tuple(c) for c in lut.tolist()}
    assert all(tuple(c) in colours for c in ir.reshape(-1, 3).tolist())


def clean_knobs(**overrides) -> Knobs:
    """Default knobs with every failure mode off."""
    return Knobs.from_difficulty({**NO_FAILURES, **overrides})


@pytest.mark.parametrize("modality", [0, 1], ids=["visible", "infrared"])
def test_every_expression_looks_different(modality):
    # The random streams do not depend on the expression, so one seed gives the same person, pose, light and
    # background under each expression: the differences below are the expression alone.
    knobs = clean_knobs(pose_jitter=0.0)
    subject = Subject.sample(np.random.default_rng(7))
    size = 48
    mouth = (slice(int(size * 0.62), int(size * 0.9)), slice(int(size * 0.3), int(size * 0.7)))
    for seed in range(2):
        imgs = {
            c: render_pair(np.random.default_rng(seed), subject, c, size, "gray", knobs)[modality]
            .astype(np.float64)
            .mean(axis=2)
            for c in CLASSES
        }
        again = render_pair(np.random.default_rng(seed), subject, "Neutral", size, "gray", knobs)[modality]
        assert np.array_equal(again.mean(axis=2), imgs["Neutral"])
        for i, a in enumerate(CLASSES):
            for b in CLASSES[i + 1 :]:
                assert np.abs(imgs[a] - imgs[b]).mean() > 0.6, (a, b)
                assert np.abs(imgs[a][mouth] - imgs[b][mouth]).mean() > 1.0, (a, b, "mouth")


def test_ir_expression_zero_makes_the_thermal_image_carry_no_expression():
    # Same seed, so the same person, pose and sensor noise under each expression: with ir_expression=0 the
    # thermal pixels are identical whatever the label, while the photo still shows the expression.
    knobs = clean_knobs(pose_jitter=0.0, ir_expression=0.0)
    subject = Subject.sample(np.random.default_rng(7))
    pairs = {c: render_pair(np.random.default_rng(3), subject, c, 40, "iron", knobs) for c in CLASSES}
    neutral_v, neutral_ir = pairs["Neutral"]
    for c in CLASSES:
        assert np.array_equal(pairs[c][1], neutral_ir), c
        if c != "Neutral":
            assert np.abs(pairs[c][0].astype(float) - neutral_v).mean() > 0.6, c
    half = render_pair(
        np.random.default_rng(3), subject, "Happy", 40, "iron", clean_knobs(pose_jitter=0.0, ir_expression=0.5)
    )
    assert not np.array_equal(half[1], neutral_ir)
    with pytest.raises(ValueError, match="ir_expression"):
        Knobs.from_difficulty({"ir_expression": 1.5})


def test_difficulty_knobs_and_presets():
    assert Knobs.from_difficulty("default") == Knobs()
    easy = Knobs.from_difficulty("easy")
    assert easy.vis_bad_light_frac == 0 and easy.ir_artifact_frac == 0
    # Any mapping (Hydra passes a DictConfig), with numbers as they come from a command line.
    k = Knobs.from_difficulty(MappingProxyType({"ir_noise": "0.5", "intensity": [0.7, 0.9]}))
    assert k.ir_noise == 0.5 and k.intensity == (0.7, 0.9) and k.ir_blur == Knobs().ir_blur


def test_each_modality_fails_alone():
    """Bad light changes only the visible image; a thermal artifact changes only the infrared one."""
    subject = Subject.sample(np.random.default_rng(2))
    clean = clean_knobs()
    dark = clean_knobs(vis_bad_light_frac=1.0)
    broken_ir = clean_knobs(ir_artifact_frac=1.0)
    for seed in range(3):
        v0, i0 = render_pair(np.random.default_rng(seed), subject, "Sad", 40, "iron", clean)
        v1, i1 = render_pair(np.random.default_rng(seed), subject, "Sad", 40, "iron", dark)
        v2, i2 = render_pair(np.random.default_rng(seed), subject, "Sad", 40, "iron", broken_ir)
        assert np.array_equal(i0, i1) and np.abs(v0.astype(float) - v1).mean() > 10
        assert np.array_equal(v0, v2) and np.abs(i0.astype(float) - i2).mean() > 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"palette": "viridis"}, "iron"),
        ({"difficulty": "hard"}, "easy"),
        ({"difficulty": {"ir_nosie": 0.1}}, "ir_noise"),
        ({"difficulty": {"vis_bad_light_frac": 1.5}}, "vis_bad_light_frac"),
        ({"difficulty": {"ir_blur": "wide"}}, "ir_blur"),
        ({"difficulty": {"intensity": 0.5}}, "intensity"),
        ({"n_subjects": 0}, "n_subjects"),
        ({"image_size": 4}, "image_size"),
    ],
)
def test_invalid_arguments_name_the_bad_key_and_the_valid_ones(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **{**TINY, **kwargs})
    assert not list(tmp_path.rglob("*.png"))


def test_render_pair_rejects_unknown_expression():
    with pytest.raises(ValueError, match="Surprise"):
        render_pair(np.random.default_rng(0), Subject.sample(np.random.default_rng(0)), "Disgust", 32, "iron", Knobs())


def test_module_api():
    assert CLASSES == ("Angry", "Happy", "Neutral", "Sad", "Surprise")
    assert {"iron", "rainbow", "gray"} <= set(synthetic.PALETTES)


def test_easy_preset_is_learnable_across_subjects(tmp_path):
    """A linear model on raw pixels, trained on some people, reads the expressions of others."""
    rows = generate(tmp_path, n_subjects=6, samples_per_class=4, image_size=32, difficulty="easy")
    train = np.array([r["subject"] not in ("s004", "s005") for r in rows])
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    onehot = np.eye(len(CLASSES))[y[train]]
    for modality in ("visible", "infrared"):
        x = np.stack([_load(tmp_path, r[modality]).ravel() / 255 for r in rows])
        x = x - x[train].mean(axis=0)
        # Ridge regression onto one-hot labels, solved in the (small) sample space.
        gram = x[train] @ x[train].T
        weights = x[train].T @ np.linalg.solve(gram + 1.0 * np.eye(len(gram)), onehot)
        accuracy = ((x[~train] @ weights).argmax(axis=1) == y[~train]).mean()
        assert accuracy >= 0.7, (modality, accuracy)


def _conditions(root: Path) -> list[dict]:
    with open(root / synthetic.CONDITIONS, newline="") as f:
        return list(csv.DictReader(f))


def test_conditions_record_what_each_sample_drew(tmp_path, tiny):
    root, rows = tiny
    conditions = _conditions(root)
    assert [c["sample_id"] for c in conditions] == [r["sample_id"] for r in rows]
    lo, hi = Knobs().intensity
    assert all(lo <= float(c["intensity"]) <= hi for c in conditions)

    only_dark_photos = {**NO_FAILURES, "vis_bad_light_frac": 1.0}
    generate(tmp_path / "bad", **TINY, seed=3, difficulty=only_dark_photos)
    bad = _conditions(tmp_path / "bad")
    assert {c["visible_condition"] for c in bad} <= {"dark", "glare", "shadow"}
    assert all(c["visible_condition"] for c in bad)
    assert not any(c["infrared_condition"] or c["occluder"] for c in bad)

    generate(tmp_path / "clean", **TINY, seed=3, difficulty=NO_FAILURES)
    clean = _conditions(tmp_path / "clean")
    assert not any(c["visible_condition"] or c["infrared_condition"] or c["occluder"] for c in clean)
    # the failure draw leaves the rest of the sample alone
    assert [c["intensity"] for c in clean] == [c["intensity"] for c in bad] == [c["intensity"] for c in conditions]


# sha256 over (relative path, bytes) of every file generate() writes, computed with synthetic.py before it became
# a package (numpy 2.4 / Pillow 13 PNG encoder): the refactor keeps the output byte for byte.
PINNED = {
    ("default", "iron", None): "e162aec51d0c54660b437d63f36046605a0f3e4bf85b55bd3c7316b186087afb",
    ("easy", "iron", None): "ad5821c0a6dd6f988d5b36033573c8c36eb7d8bed9ad63740ba643b77ca10830",
    ("failures", "rainbow", (("ir_artifact_frac", 0.5), ("occlusion_frac", 1.0), ("vis_bad_light_frac", 0.5))): (
        "b1ed899d9a988a7a7cd67e2bc8536036fa078e7b786ebd07ca50b9653ee330a6"
    ),
}


@pytest.mark.parametrize("name, palette, knobs", list(PINNED), ids=[k[0] for k in PINNED])
def test_generated_bytes_are_pinned(tmp_path, name, palette, knobs):
    difficulty = dict(knobs) if knobs else name
    generate(tmp_path, n_subjects=2, samples_per_class=2, image_size=32, seed=7, palette=palette, difficulty=difficulty)
    digest = hashlib.sha256()
    # planted_faces.csv came later (its boxes are checked in test_faces.py); the pins hold for everything else
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name != PLANTED_FACES):
        digest.update(path.relative_to(tmp_path).as_posix().encode() + b"\0" + path.read_bytes())
    assert digest.hexdigest() == PINNED[name, palette, knobs]
