"""conf/dataset/: each dataset composes to the keys users rely on (docs and /work/shared/CONTRACTS.md), and the
published datasets hold only what differs from their shared base."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from fer_lightning.runs import build_datamodule
from tests.conftest import CONF, compose_cfg

PUBLISHED = {"viri": ["Angry", "Happy", "Neutral", "Sad", "Surprise"], "nvie": ["fear", "disgust", "happy"]}
IMAGE_FILES = {"viri", "nvie", "folder"}


@pytest.mark.parametrize("dataset", ["synthetic", "synthetic_small", "viri", "nvie", "folder"])
def test_a_dataset_composes_with_the_keys_users_rely_on(dataset, tmp_path):
    cfg = compose_cfg([f"dataset={dataset}"], tmp_path)
    ds = cfg.dataset
    assert ds.name == dataset and ds.modality == cfg.modality
    assert (ds.batch_size, ds.eval_batch_size, ds.num_workers, ds.cache_scale) == (64, None, "auto", "auto")
    assert ds.image_size == (224 if dataset in IMAGE_FILES else 64)
    split = ds.split
    assert (split.seed, split.folds, split.fold, split.near_duplicates) == (0, None, 0, "group")
    assert split.holdout_regex is None
    assert cfg.model.backbone.weights == (None if dataset == "synthetic" else "imagenet")  # its recipe's
    if dataset in IMAGE_FILES:
        assert (ds.pairing, ds.sixteen_bit, list(ds.sixteen_bit_range)) == ("auto", "minmax", [0, 65535])
    if dataset in PUBLISHED:
        assert list(ds.classes) == PUBLISHED[dataset]
        assert (ds.download, ds.verify, ds.base_url, ds.retries) == (True, True, None, 3)
        assert dict(ds.extract) == {"max_entry_mb": 64, "max_archive_mb": 2048}
    if dataset == "folder":
        assert ds.root is None and ds.classes is None
        ds = compose_cfg([f"dataset={dataset}", f"dataset.root={tmp_path}"], tmp_path).dataset
    build_datamodule(ds)  # every composed key is one the datamodule takes


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_a_published_dataset_file_holds_only_what_differs(dataset):
    own = OmegaConf.to_container(OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml"))
    assert own.pop("defaults") == ["_published", "_self_"]
    assert set(own) <= {"_target_", "name", "classes", "split"}
