"""An augmentation preset of ``conf/augment/`` built as the config would build it."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF


def preset(name: str) -> dict:
    return instantiate(OmegaConf.to_container(OmegaConf.load(CONF / "augment" / f"{name}.yaml")), _convert_="all")
