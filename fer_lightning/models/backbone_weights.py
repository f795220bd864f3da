"""A backbone's weights: torchvision's ImageNet weights, or a state dict file, loaded into the trunk."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.io import load_tensors
from fer_lightning.models.backbone_base import Backbone


def read_state_dict(weights: str) -> dict[str, torch.Tensor]:
    """The tensors of the file ``weights`` names (``.safetensors``, or a tensors-only torch file, whose
    ``state_dict`` entry is taken when it has one); FERError naming ``model.backbone.weights`` when unreadable."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FERError(f"model.backbone.weights={weights!r}: no such file; give a state dict path, 'imagenet' or null")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except Exception as exc:  # safetensors raises several types for a bad file
            raise FERError(f"model.backbone.weights={path}: not a readable .safetensors file ({exc})") from exc
    else:
        state = load_tensors(path, "model.backbone.weights", unreadable="not a loadable state dict")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def imagenet_state_dict(name: str, weights_enum) -> dict[str, torch.Tensor]:
    """torchvision's ``weights_enum`` weights for backbone ``name``, from the torch hub cache or downloaded; offline
    without them, FERError naming the file to put in the cache."""
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline: URLError, socket errors, hash mismatch
        filename = weights_enum.url.rsplit("/", 1)[-1]
        cache = Path(torch.hub.get_dir()) / "checkpoints" / filename
        raise FERError(
            f"cannot get ImageNet weights for {name} ({exc.__class__.__name__}); download {weights_enum.url} "
            f"to {cache}, or pass model.backbone.weights=null to train from scratch"
        ) from exc


def load_trunk(backbone: Backbone, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads a bare trunk's state dict (its classifier ignored) or a full Backbone state dict."""
    full = any(k.startswith("trunk.") for k in state)
    target: nn.Module = backbone if full else backbone.trunk
    if not full:
        state = {k: v for k, v in state.items() if not k.startswith(backbone.classifier_prefixes)}
    own = target.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(("attention.", "projection."))]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or misshapen:
        bad = (misshapen or missing or unexpected)[:2]
        raise FERError(
            f"{source}: weights do not fit this backbone ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(misshapen)} misshapen keys, e.g. {bad}); check model.backbone.name"
        )
    target.load_state_dict(state, strict=False)
