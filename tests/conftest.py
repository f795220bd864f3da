"""Shared fixtures: configs composed once per test and overridden to CPU, tiny images and no logger."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fer_lightning import resolvers  # noqa: F401

CONF = Path(__file__).resolve().parents[1] / "conf"
REPO = CONF.parent

# fixtures shared by unit and integration tests
pytest_plugins = ["tests.helpers.fixtures"]

# A tiny synthetic dataset: 6 subjects x 5 classes x 3 samples = 90 pairs at 40 px, fed at 32 px.
TINY = [
    "dataset.generator.n_subjects=6",
    "dataset.generator.samples_per_class=3",
    "dataset.generator.image_size=40",
    "dataset.image_size=32",
    "dataset.batch_size=16",
    "dataset.num_workers=0",
]


def compose_cfg(overrides: list[str], output_dir: Path, data_dir: Path | None = None) -> DictConfig:
    """Composes ``train.yaml`` as the command line would, with the run writing under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.precision = "32-true"
        cfg.trainer.enable_progress_bar = False
        cfg.callbacks.pop("progress_bar", None)
    return cfg


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder for the session, so the tiny synthetic dataset is generated once."""
    return tmp_path_factory.mktemp("data")
