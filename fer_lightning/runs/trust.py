"""What a stored run config may instantiate.

evaluate, predict, explain and robustness read a run dir's ``.hydra/config.yaml``, a file that travels with the
checkpoint and may have been edited. Hydra's ``instantiate`` would call whatever a ``_target_`` names
(``shutil.copyfile``, ``builtins.open``), so every ``_target_`` of such a config, at any depth and in lists, must
name one of the project's own components, and no value may use a resolver that builds config nodes from a string
(``oc.create``, ``oc.decode``), all checked before anything is built. The training path composes the user's own
config from ``conf/`` and is not checked: a user may train with their own callbacks.

``tests/unit/test_security.py`` walks every ``_target_`` and resolver in ``conf/`` and asserts each is allowed here,
so the lists cannot drift from the configs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from typing import Any

from omegaconf.errors import GrammarParseError
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
from omegaconf.grammar_parser import parse

# The classes and factories conf/ names: the LightningModules, datamodules, Trainer, callbacks, loggers and the
# project's own augmentation.
COMPONENTS = frozenset(
    {
        "fer_lightning.models.lightning.FusionModule",
        "fer_lightning.models.lightning.SingleModalityModule",
        "fer_lightning.data.dataset_datamodules.SyntheticDataModule",
        "fer_lightning.data.dataset_datamodules.VIRIDataModule",
        "fer_lightning.data.dataset_datamodules.NVIEDataModule",
        "fer_lightning.data.dataset_datamodules.FolderDataModule",
        # a dataset added with a registered source names it (docs/contributing.md#add-a-dataset)
        "fer_lightning.data.dataset_datamodules.PublishedDataModule",
        "lightning.pytorch.Trainer",
        "fer_lightning.callbacks.checkpoint.AtomicModelCheckpoint",
        "fer_lightning.callbacks.step_seed.StepSeed",
        "fer_lightning.callbacks.preemption.PreemptionCheckpoint",
        "fer_lightning.callbacks.progress.ProgressLog",
        "fer_lightning.callbacks.figures.RunFigures",
        "lightning.pytorch.callbacks.RichProgressBar",
        "fer_lightning.loggers.AppendingCSVLogger",
        "fer_lightning.loggers.wandb_logger",
        "fer_lightning.data.transforms.TorchvisionPerspective",
    }
)

# Targets as run dirs saved before a module was renamed name them -> the class's place now. A stored config may
# name the old place; the run layer instantiates the new one (runs/instantiate.py).
MOVED = {
    **{
        f"fer_lightning.models.modules.{c}": f"fer_lightning.models.lightning.{c}"
        for c in ("FusionModule", "SingleModalityModule")
    },
    **{
        f"fer_lightning.data.datamodules.{c}": f"fer_lightning.data.dataset_datamodules.{c}"
        for c in ("SyntheticDataModule", "VIRIDataModule", "NVIEDataModule", "FolderDataModule", "PublishedDataModule")
    },
    "fer_lightning.checkpointing.AtomicModelCheckpoint": "fer_lightning.callbacks.checkpoint.AtomicModelCheckpoint",
    "fer_lightning.checkpointing.StepSeed": "fer_lightning.callbacks.step_seed.StepSeed",
    "fer_lightning.checkpointing.PreemptionCheckpoint": "fer_lightning.callbacks.preemption.PreemptionCheckpoint",
    "fer_lightning.callbacks.ProgressLog": "fer_lightning.callbacks.progress.ProgressLog",
    "fer_lightning.callbacks.RunFigures": "fer_lightning.callbacks.figures.RunFigures",
}


def current_target(target: str) -> str:
    """Where the class a stored ``_target_`` names lives now (itself unless its module was renamed)."""
    return MOVED.get(target, target)


def _family_bases(module: str) -> tuple[type, ...] | None:
    """The classes whose subclasses in ``module`` a config may name: optimisers, LR schedulers, augmentations."""
    if module == "torch.optim":
        from torch.optim import Optimizer

        return (Optimizer,)
    if module == "torch.optim.lr_scheduler":
        from torch.optim.lr_scheduler import LRScheduler

        return (LRScheduler,)
    if module == "albumentations":
        from albumentations.core.composition import BaseCompose
        from albumentations.core.transforms_interface import BasicTransform

        return (BasicTransform, BaseCompose)
    return None


# Resolvers the configs use; none of them turns a string into config nodes.
RESOLVERS = frozenset(
    {"oc.env", "oc.select", "now", "hydra", "fer_precision", "fer_on_cuda", "fer_default_recipe", "fer_unique"}
)
# ${hydra:...} may read the runtime facts only, not the nodes of Hydra's own config that hold a _target_
# (launcher, sweeper, callbacks).
_HYDRA_KEY = re.compile(r"(runtime|job)(\.\w+)*")


def is_component(target: Any) -> bool:
    """Whether ``target`` (a ``_target_`` value) names a fer-lightning component."""
    if not isinstance(target, str):
        return False
    if current_target(target) in COMPONENTS:
        return True
    module, _, name = target.rpartition(".")
    bases = _family_bases(module)
    if bases is None or not name.isidentifier():
        return False
    obj = getattr(importlib.import_module(module), name, None)
    return isinstance(obj, type) and issubclass(obj, bases)


def _resolvers(text: str) -> list[tuple[str, list[str]]]:
    """The resolvers an interpolation string calls, nested ones included, with their arguments' text."""
    try:
        tree = parse(text)
    except GrammarParseError:
        return []  # not an interpolation OmegaConf can resolve either
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            args = node.sequence().element() if node.sequence() else []
            found.append((node.resolverName().getText(), [a.getText() for a in args]))
        stack.extend(node.getChild(i) for i in range(node.getChildCount()) if hasattr(node.getChild(i), "getChild"))
    return found


def _nodes(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of every dict node and string in ``node``, keys as ``a.b[0].c``."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from _nodes(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _nodes(v, f"{key}[{i}]")
    elif isinstance(node, str):
        yield key, node


def untrusted(container: Any, root: str = "") -> str | None:
    """What in ``container`` (a config as plain dicts and lists, interpolations unresolved; its keys shown under
    ``root``) could instantiate something other than a fer-lightning component; None when nothing could."""
    for key, value in _nodes(container, root):
        if isinstance(value, dict):
            if "_target_" in value and not is_component(value["_target_"]):
                return f"{key or 'the top level'} names {value['_target_']}, which is not a fer-lightning component"
            continue
        if "${" not in value:
            continue
        for name, args in _resolvers(value):
            if name not in RESOLVERS:
                return f"{key} uses ${{{name}:...}}, a resolver fer-lightning's configs never use"
            if name == "hydra" and not (args and _HYDRA_KEY.fullmatch(args[0])):
                return f"{key} reads ${{hydra:{','.join(args)}}}, which is not one of Hydra's runtime facts"
    return None
