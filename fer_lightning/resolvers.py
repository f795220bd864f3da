"""OmegaConf resolvers used by the configs (registered on import)."""

from __future__ import annotations

import os
import secrets

from omegaconf import OmegaConf


def auto_precision() -> str:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def on_cuda() -> bool:
    """GPU-only speed settings (channels_last, cudnn benchmark) default to on where a GPU will be used."""
    import torch

    return torch.cuda.is_available()


# The recipe a dataset trains with when neither recipe= nor experiment= chooses one: the short defaults were
# tuned on the 64-px synthetic set; real data gets the recommended recipe (conf/recipe/).
DEFAULT_RECIPE = {"synthetic": "short"}


def default_recipe(dataset: str) -> str:
    return DEFAULT_RECIPE.get(dataset, "ours")


def unique_suffix() -> str:
    return f"{os.getpid()}{secrets.token_hex(2)}"


def register() -> None:
    if not OmegaConf.has_resolver("fer_precision"):
        OmegaConf.register_new_resolver("fer_precision", auto_precision, use_cache=True)
    if not OmegaConf.has_resolver("fer_on_cuda"):
        OmegaConf.register_new_resolver("fer_on_cuda", on_cuda, use_cache=True)
    if not OmegaConf.has_resolver("fer_default_recipe"):
        OmegaConf.register_new_resolver("fer_default_recipe", default_recipe)
    if not OmegaConf.has_resolver("fer_unique"):
        OmegaConf.register_new_resolver("fer_unique", unique_suffix, use_cache=True)


register()
