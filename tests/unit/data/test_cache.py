"""The decode-once cache: exact round trip, reuse, invalidation, corruption detection, datamodule use."""

from __future__ import annotations

import json
import pickle

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from fer_lightning.data import cache
from fer_lightning.data.cache import auto_size, cache_images, decode_resized, stored_size
from fer_lightning.data.dataset_datamodules import SyntheticDataModule
from fer_lightning.data.datasets import resolve_workers
from fer_lightning.data.transforms import TorchvisionPerspective
from fer_lightning.errors import FERError


def _images(root, n=5, size=(48, 40)):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        rel = f"visible/img{i}.{'jpg' if i % 2 else 'png'}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / rel)
        rows.append({"sample_id": f"s{i}", "visible": rel, "visible_sha1": f"h{i}"})
    return rows


def verify(manifest_dir) -> dict[str, bool]:
    """Every row of every cache file of a prepared dataset checked against its sidecar: {file name: intact}."""
    out = {}
    for meta_path in sorted((manifest_dir / cache.CACHE_DIR).glob("*.json")):
        meta = json.loads(meta_path.read_text())
        npy = meta_path.with_suffix(".npy")
        out[npy.name] = cache._valid(npy, meta_path, meta.get("key"), meta.get("paths"), full=True) is not None
    return out


def _npys(root):
    return sorted((root / cache.CACHE_DIR).glob("*.npy"))


def test_cache_round_trips_exactly_and_is_reused(tmp_path, monkeypatch):
    rows = _images(tmp_path)
    imgs = cache_images(tmp_path, rows, "visible", 36)
    assert imgs.shape == (5, 36, 36, 3)
    for i, r in enumerate(rows):
        assert np.array_equal(imgs[i], decode_resized(tmp_path / r["visible"], 36))
    assert np.asarray(imgs).dtype == np.uint8
    # A second call maps the same file without decoding anything.
    monkeypatch.setattr(cache, "decode_resized", lambda *a: pytest.fail("decoded again"))
    again = cache_images(tmp_path, rows, "visible", 36)
    assert again.path == imgs.path and np.array_equal(np.asarray(again), np.asarray(imgs))
    # Workers receive the path, not the pixels.
    assert len(pickle.dumps(imgs)) < 2000
    assert np.array_equal(pickle.loads(pickle.dumps(imgs.subset([3, 1])))[0], imgs[3])


def test_manifest_or_size_change_rebuilds_and_removes_stale(tmp_path):
    rows = _images(tmp_path)
    first = cache_images(tmp_path, rows, "visible", 36)
    rows[2] = {**rows[2], "visible": rows[0]["visible"], "visible_sha1": rows[0]["visible_sha1"]}
    second = cache_images(tmp_path, rows, "visible", 36)
    assert second.path != first.path and not first.path.exists()
    assert np.array_equal(second[2], second[0])
    bigger = cache_images(tmp_path, rows, "visible", 40)
    assert bigger.shape[1:] == (40, 40, 3)
    assert len(_npys(tmp_path)) == 2  # one per size


def test_replaced_source_file_rebuilds(tmp_path):
    rows = _images(tmp_path)
    first = cache_images(tmp_path, rows, "visible", 36)
    Image.new("RGB", (48, 40), (255, 0, 0)).save(tmp_path / rows[0]["visible"])
    second = cache_images(tmp_path, rows, "visible", 36)
    assert second.path != first.path and (second[0] == [255, 0, 0]).all()


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar", "delete"])
def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, damage):
    rows = _images(tmp_path)
    good = np.asarray(cache_images(tmp_path, rows, "visible", 36)).copy()
    (npy,) = _npys(tmp_path)
    if damage == "flip":
        data = bytearray(npy.read_bytes())
        data[-10] ^= 0xFF  # last row, always among the rows checked at load
        npy.write_bytes(bytes(data))
        assert verify(tmp_path) == {npy.name: False}
    elif damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "sidecar":
        npy.with_suffix(".json").write_text("{not json")
    else:
        import shutil

        shutil.rmtree(tmp_path / cache.CACHE_DIR)
    rebuilt = cache_images(tmp_path, rows, "visible", 36)
    assert np.array_equal(np.asarray(rebuilt), good)
    assert verify(tmp_path) == {npy.name: True}


def test_sidecar_records_shape_and_checksums(tmp_path):
    rows = _images(tmp_path, n=3)
    imgs = cache_images(tmp_path, rows, "visible", 20)
    meta = json.loads(imgs.path.with_suffix(".json").read_text())
    assert meta["shape"] == [3, 20, 20, 3] and len(meta["crc32"]) == 3
    assert meta["file_size"] == imgs.path.stat().st_size


def test_stored_size_is_never_below_the_input_and_follows_the_scale():
    for side in (32, 64, 224):
        assert stored_size(side, 1.0) == side and stored_size(side, 0.5) == side
        sides = [stored_size(side, s) for s in (1.1, 1.25, 1.5, 2.0)]
        assert sides == sorted(set(sides)) and sides[0] > side  # strictly growing with the scale
        assert stored_size(side, 2.0) == 2 * side
    # a side recorded as a scale (a checkpoint's cache_side / image_size) comes back exactly
    assert all(stored_size(s, side / s) == side for s in (32, 64, 112, 224) for side in range(s, 4 * s, 7))


def test_auto_size_is_the_source_capped():
    assert auto_size(64, 96) == 96 and auto_size(64, 48) == 64  # never below the input
    assert auto_size(64, 3000) == cache.AUTO_MAX_SIDE == 256 and auto_size(224, 3000) == 448


def _small_dm(tmp_path, **kwargs) -> SyntheticDataModule:
    """A prepared and set-up fusion datamodule of 6 tiny synthetic subjects, fed at 32 px."""
    kwargs = {
        "modality": "fusion",
        "image_size": 32,
        "batch_size": 8,
        "num_workers": 0,
        "generator": {"n_subjects": 6, "samples_per_class": 2, "image_size": 40},
        "split": {"group_regex": r"^(s\d+)_"},
        **kwargs,
    }
    dm = SyntheticDataModule(data_dir=str(tmp_path), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_datamodule_serves_from_cache(tmp_path):
    dm = _small_dm(tmp_path, normalization="dataset", cache_scale=1.125)
    assert {p.name.split("-")[0] for p in _npys(dm.root)} == {"visible", "infrared"}
    train = dm._datasets["train"]
    assert train.images["visible"].shape[1:] == (36, 36, 3)
    row = dm.rows[int(train.indices[0])]
    assert np.array_equal(train.images["infrared"][0], decode_resized(dm.root / row["infrared"], 36))
    batch = next(iter(dm.train_dataloader()))
    assert batch["visible"].shape == (8, 3, 32, 32) and batch["visible"].dtype.is_floating_point is False
    x = dm.normalize(batch)["visible"]
    mean, std = (np.array(v) for v in dm.stats["visible"])
    expected = (batch["visible"].float().numpy() / 255 - mean[:, None, None]) / std[:, None, None]
    assert np.allclose(x.numpy(), expected, atol=1e-5)


def test_num_workers_auto(monkeypatch):
    import os

    import torch

    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(2)), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_workers("auto") == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_workers("auto") == 12
    assert resolve_workers(3) == 3
    with pytest.raises(FERError, match=r"dataset\.num_workers"):
        resolve_workers("many")


WARPS = (A.Rotate, A.Affine, TorchvisionPerspective, A.HorizontalFlip)


def _warp_sides(monkeypatch) -> list[int]:
    """Records the side of every image the paper preset's geometric transforms are applied to."""
    sides = []
    for cls in WARPS:

        def apply(self, img, *args, _orig=cls.apply, **kwargs):
            sides.append(img.shape[0])
            return _orig(self, img, *args, **kwargs)

        monkeypatch.setattr(cls, "apply", apply)
    return sides


def _paper_dm(tmp_path, **kwargs) -> SyntheticDataModule:
    from tests.helpers.augment_presets import preset

    kwargs.setdefault("augment", {**preset("paper"), "offline_copies": 26})
    return _small_dm(
        tmp_path,
        generator={"n_subjects": 6, "samples_per_class": 1, "image_size": 48},
        split={"group_regex": r"^(s\d+)_", "ratios": [0.34, 0.33, 0.33]},
        **kwargs,
    )


@pytest.mark.parametrize(("scale", "side"), [("auto", 48), (1.125, 36)])
def test_augmentation_warps_at_the_cached_resolution_then_resizes(tmp_path, monkeypatch, scale, side):
    sides = _warp_sides(monkeypatch)
    dm = _paper_dm(tmp_path, cache_scale=scale)
    assert dm.cache_side == side and dm._datasets["val"].images["visible"].shape[1] == side
    batch = next(iter(dm.train_dataloader()))  # the 25 offline copies of each image are drawn here
    assert len(sides) >= 25 * len(dm._datasets["train"]) // 26 and set(sides) == {side}
    assert dm._datasets["train"].images["visible"].shape[1:] == (32, 32, 3)
    assert batch["visible"].shape[2:] == (32, 32) and next(iter(dm.val_dataloader()))["visible"].shape[2:] == (32, 32)
    # online augmentation warps at the same cached side
    sides.clear()
    online = _paper_dm(tmp_path, cache_scale=scale, augment={**dm.augment, "offline_copies": 0})
    assert next(iter(online.train_dataloader()))["infrared"].shape[2:] == (32, 32)
    assert sides and set(sides) == {side}


def test_auto_cache_without_warps_is_the_input_size_and_is_remembered(tmp_path):
    dm = _paper_dm(tmp_path, augment={"geometric": [], "offline_copies": 0})
    assert dm.cache_side == 32
    warped = _paper_dm(tmp_path)
    assert warped.cache_side == 48
    # a checkpoint's datamodule state gives a fresh module (predict, evaluate) the side its run used
    fresh = SyntheticDataModule(data_dir=str(tmp_path), image_size=32)
    fresh.load_state_dict(warped.state_dict())
    assert stored_size(fresh.image_size, fresh.cache_scale) == 48


def test_cache_scale_must_be_auto_or_at_least_one(tmp_path):
    for bad in (0.5, "big"):
        with pytest.raises(FERError, match=r"dataset\.cache_scale"):
            SyntheticDataModule(data_dir=str(tmp_path), cache_scale=bad)


def test_cache_is_built_under_the_data_lock(tmp_path, monkeypatch):
    """Ranks and nodes sharing a data dir build the cache one at a time: a second lock on it is refused while the
    cache is built."""
    from filelock import FileLock, Timeout

    from fer_lightning.data import cache_sizing

    held = []
    build = cache_sizing.cache_images

    def checking(manifest_dir, *args, **kwargs):
        lock_file = next((tmp_path / ".locks").glob("*.lock"))
        try:
            with FileLock(lock_file, timeout=0):
                held.append(False)
        except Timeout:
            held.append(True)
        return build(manifest_dir, *args, **kwargs)

    monkeypatch.setattr(cache_sizing, "cache_images", checking)
    _small_dm(tmp_path)
    assert held == [True, True]  # visible and infrared


def test_temporaries_name_their_host_and_another_hosts_live_file_is_kept(tmp_path, monkeypatch):
    import os
    import time

    from fer_lightning import io

    tmp = io.temp_sibling(tmp_path / "cache.npy")
    assert f".{io._host()}-{os.getpid()}.tmp" in tmp.name
    monkeypatch.setattr(io, "_host", lambda: "nodeA")
    dead = 999_999_999
    mine_dead = tmp_path / f".a.npy.nodeA-{dead}.tmp"
    old_style_dead = tmp_path / f".b.npy.{dead}.tmp"
    other_fresh = tmp_path / f".c.npy.nodeB-{dead}.tmp"  # nodeB's pid cannot be checked from here
    other_old = tmp_path / f".d.npy.nodeB-{dead}.tmp"
    for f in (mine_dead, old_style_dead, other_fresh, other_old):
        f.write_bytes(b"x")
    long_ago = time.time() - io.FOREIGN_STALE_SECONDS - 60
    os.utime(other_old, (long_ago, long_ago))
    removed = io.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(p.name for p in (mine_dead, old_style_dead, other_old))
    assert other_fresh.exists()
