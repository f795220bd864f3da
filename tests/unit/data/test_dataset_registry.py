"""Adding a dataset is one config file plus one registered source: a toy dataset, registered here, is prepared
and served like viri and nvie."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lightning.data.manifest import read_manifest
from fer_lightning.data.sources import Sources, registry
from fer_lightning.data.sources.folder import folder_sources
from fer_lightning.errors import FERError
from fer_lightning.prepare import prepare
from fer_lightning.runs import build_datamodule
from tests.conftest import compose_cfg

CLASSES = ("calm", "smile")
TOY_YAML = """\
defaults:
  - _published
  - _self_
_target_: fer_lightning.data.dataset_datamodules.PublishedDataModule
name: toy
classes: [calm, smile]
image_size: 32
"""


def toy_source(request: registry.SourceRequest) -> Sources:
    """A stand-in for a download: tiny visible/infrared pairs written into the dataset's raw folder."""
    rng = np.random.default_rng(0)
    for c in CLASSES:
        for i in range(7):
            for modality in ("visible", "infrared"):
                path = request.raw_dir / modality / c / f"s{i}_{c}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return folder_sources(request.raw_dir)


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(registry, "SOURCES", dict(registry.SOURCES))
    registry.register_source("toy", toy_source)
    conf = tmp_path / "conf"
    (conf / "dataset").mkdir(parents=True)
    (conf / "dataset" / "toy.yaml").write_text(TOY_YAML)
    return conf


def test_a_registered_dataset_is_prepared_and_served(toy, tmp_path):
    data = tmp_path / "data"
    overrides = ["dataset=toy", f"hydra.searchpath=[file://{toy}]", "dataset.num_workers=0"]
    cfg = compose_cfg(overrides, tmp_path / "run", data)
    prepare(cfg)
    rows = read_manifest(data / "toy" / "manifest.csv")
    assert len(rows) == 14 and {r["label"] for r in rows} == set(CLASSES)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(r["visible"] and r["infrared"] for r in rows)
    dm = build_datamodule(cfg.dataset)
    dm.prepare_data()
    dm.setup("fit")
    batch = dm.normalize(next(iter(dm.train_dataloader())))
    assert dm.classes == list(CLASSES) and batch["visible"].shape[1:] == (3, 32, 32)


def test_a_dataset_name_is_registered_once_and_an_unknown_one_is_named(toy):
    with pytest.raises(ValueError, match="toy"):
        registry.register_source("toy", toy_source)
    with pytest.raises(FERError, match=r"dataset.name=nope: no source registered .* nvie, toy, viri"):
        registry.source_of("nope")
