"""Override lists and model names shared by a unit test file and its integration counterpart."""

from __future__ import annotations

from tests.conftest import TINY

# One timm model per family, with what it needs to take the tests' 32 px images.
TIMM = {
    "timm/convnext_atto": {},
    "timm/mobilenetv3_small_050": {},
    "timm/vit_tiny_patch16_224": {"img_size": 32},
}

# two CPU processes through DDP (gloo)
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]

# TINY's synthetic faces, drawn at 48 px (a one-pixel shift is then 2 % of the side, as far as the check looks),
# with two near-identical copies of every sample, split without subject groups (as frames of a video without
# subject ids would be)
COPIES = [
    *TINY,
    "dataset.generator.image_size=48",
    "+dataset.generator.difficulty.near_duplicates=2",
    "dataset.split.group_regex=null",
]
