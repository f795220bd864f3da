"""OmegaConf resolvers used by the configs (registered on import)."""

from __future__ import annotations

import os
import secrets

from omegaconf import OmegaConf


def _uses_cuda(accelerator: str | None) -> bool:
    """Whether the Trainer will run on a CUDA GPU with this ``trainer.accelerator`` (``auto``: if one exists)."""
    import torch

    name = str(accelerator or "auto").lower()
    return name in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def auto_precision(accelerator: str | None = "auto") -> str:
    """bf16 autocast on Ampere and newer, fp16 autocast on older GPUs (no fast bf16 there), fp32 elsewhere.

    It follows the *chosen* accelerator: ``trainer.accelerator=cpu`` on a GPU host trains in fp32.
    """
    if not _uses_cuda(accelerator):
        return "32-true"
    import torch

    # torch.cuda.is_bf16_supported() also says yes where bf16 is only emulated (e.g. V100, T4), at a loss of speed
    return "bf16-mixed" if torch.cuda.get_device_capability() >= (8, 0) else "16-mixed"


def on_cuda(accelerator: str | None = "auto") -> bool:
    """GPU-only speed settings (channels_last, cudnn benchmark) default to on where a GPU will be used."""
    return _uses_cuda(accelerator)


# The recipe a dataset trains with when neither recipe= nor experiment= chooses one: the short defaults were
# tuned on the 64-px synthetic set; real data gets the recommended recipe (conf/recipe/).
DEFAULT_RECIPE = {"synthetic": "short"}


def default_recipe(dataset: str) -> str:
    """The recipe ``${fer_default_recipe:${dataset}}`` resolves to: :data:`DEFAULT_RECIPE`'s, else ``ours``."""
    return DEFAULT_RECIPE.get(dataset, "ours")


def unique_suffix() -> str:
    """``${fer_unique:}``: the process id and 4 random hex digits, so run dirs started in the same second differ."""
    return f"{os.getpid()}{secrets.token_hex(2)}"


def register() -> None:
    """Registers the ``fer_*`` resolvers the configs use (once per process; importing this module does it)."""
    if not OmegaConf.has_resolver("fer_precision"):
        OmegaConf.register_new_resolver("fer_precision", auto_precision, use_cache=True)
    if not OmegaConf.has_resolver("fer_on_cuda"):
        OmegaConf.register_new_resolver("fer_on_cuda", on_cuda, use_cache=True)
    if not OmegaConf.has_resolver("fer_default_recipe"):
        OmegaConf.register_new_resolver("fer_default_recipe", default_recipe)
    if not OmegaConf.has_resolver("fer_unique"):
        OmegaConf.register_new_resolver("fer_unique", unique_suffix, use_cache=True)


register()
