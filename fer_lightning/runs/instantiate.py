"""Objects from config nodes: datamodule, model, trainer, callbacks, loggers. The one place Hydra instantiates."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from fer_lightning.callbacks.summary import ModelSummary
from fer_lightning.data.datamodule import ManifestDataModule
from fer_lightning.errors import FERError, expected_error
from fer_lightning.models.lightning import FusionModule, SingleModalityModule
from fer_lightning.models.networks import build_network
from fer_lightning.runs.config import EVAL_TRAINER_KEYS
from fer_lightning.runs.run_checkpoint import RunCheckpoint, checkpoint_modality
from fer_lightning.runs.trust import current_target

MODULES = {"fusion": FusionModule, "visible": SingleModalityModule, "infrared": SingleModalityModule}
# Where a run trained on several devices or nodes: evaluation scores on one device, as a single-device run would
DEVICE_KEYS = ("devices", "strategy", "num_nodes")


def _instantiate(node: Any, **kwargs: Any) -> Any:
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        # Hydra wraps what a constructor raises; ours are expected errors and stay one line.
        error = expected_error(exc)
        if error is not None:
            raise error from None
        raise


def build_datamodule(dataset_cfg: DictConfig, read_only: bool = False) -> ManifestDataModule:
    """The datamodule of ``dataset_cfg``; ``read_only`` (evaluation) reads the prepared dataset and writes none."""
    spec = OmegaConf.to_container(dataset_cfg, resolve=True)
    # run dirs saved before the recipes held model.backbone.weights carry it here as dataset.pretrained
    spec.pop("pretrained", None)
    spec["_target_"] = current_target(spec["_target_"])
    return _instantiate(spec, read_only=read_only)


def build_model(model_cfg: DictConfig, classes: list[str]) -> L.LightningModule:
    """The LightningModule of ``model_cfg`` for ``classes`` (their count sizes the head; their names go into the
    checkpoint). A bad value is one FERError line, not Hydra's wrapped traceback."""
    return _instantiate(model_cfg, num_classes=len(classes), class_names=classes)


def build_group(group: DictConfig | None) -> list:
    """Every node of a config group such as ``callbacks`` or ``logger`` that names a ``_target_``."""
    if not group:
        return []
    return [_instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def build_trainer(trainer_cfg: DictConfig, callbacks: list | None = None, loggers: list | None = None) -> L.Trainer:
    """The Trainer of ``trainer_cfg`` with ``callbacks`` and ``loggers`` (none: no logger); without a terminal,
    no redrawn progress bar, and the project's model summary in place of Lightning's."""
    callbacks = list(callbacks or [])
    trainer_cfg = trainer_cfg.copy()
    with open_dict(trainer_cfg):
        if not sys.stdout.isatty():
            # a log file, not a terminal: redrawn bars would fill it with frames; callbacks.progress_log prints lines
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
            trainer_cfg.enable_progress_bar = False
        if trainer_cfg.get("enable_model_summary", True):
            # ours in place of Lightning's, whose FLOPs read 0 here
            trainer_cfg.enable_model_summary = False
            callbacks.append(ModelSummary())
    return _instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def world_size(trainer_cfg: DictConfig) -> int:
    """The number of processes the trainer settings train with (devices x nodes), as Lightning resolves them
    (``devices=auto`` or ``-1`` on a GPU host: every visible GPU); nothing is launched."""
    spec = {k: _plain(trainer_cfg[k]) for k in ("_target_", "accelerator", *DEVICE_KEYS) if k in trainer_cfg}
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return int(_instantiate(spec, **quiet).world_size)


def eval_trainer(
    trainer_cfg: DictConfig,
    output_dir: str | None = None,
    callbacks: list | None = None,
    loggers: list | None = None,
    devices: int | list = 1,
    progress_bar: bool = True,
) -> L.Trainer:
    """The run's accelerator and precision settings (:data:`EVAL_TRAINER_KEYS`) on one device, writing under
    ``output_dir``: no limits (evaluation tests the whole split), and no callbacks, loggers, profilers or root dir
    of the config's own.

    ``devices``: which one, as Lightning takes it (1: the first; ``[2]``: GPU 2). ``progress_bar=False``: no bar,
    whatever the run's setting (a caller that prints its own progress).
    """
    spec = {k: _plain(trainer_cfg[k]) for k in EVAL_TRAINER_KEYS if k in trainer_cfg and k not in DEVICE_KEYS}
    spec["devices"] = devices
    spec["enable_model_summary"] = False
    if not progress_bar:
        spec["enable_progress_bar"] = False
    if output_dir is not None:
        spec["default_root_dir"] = output_dir
    return build_trainer(OmegaConf.create(spec), callbacks, loggers)


def _without_weights_files(hparams: dict) -> dict:
    """The checkpoint holds every weight: no ImageNet download, no weights or infrared-branch init file read."""
    out = dict(hparams)
    for key in ("backbone", "infrared_backbone"):
        if isinstance(out.get(key), dict):
            out[key] = {**out[key], "weights": None}
    if "infrared_init" in out:
        out["infrared_init"] = None
    # evaluation neither compiles nor converts the weights to channels-last (both happen when fitting starts)
    return {**out, "compile": False, "channels_last": False}


def model_from_checkpoint(run: RunCheckpoint) -> L.LightningModule:
    """The checkpoint's own model, in eval mode: the class its weights are of, built from the settings Lightning
    saved in it (``hyper_parameters``), never from the run's editable config."""
    module = _module_of(run)
    return _with_weights(run, lambda hparams: module(**hparams), module.__name__)


def network_from_checkpoint(run: RunCheckpoint) -> nn.Module:
    """The checkpoint's network alone (:func:`~fer_lightning.models.networks.build_network`: no LightningModule,
    metrics or optimiser), in eval mode, built as :func:`model_from_checkpoint` builds the model."""
    module = _module_of(run)
    return _with_weights(run, build_network, module.__name__)


def _module_of(run: RunCheckpoint) -> type[L.LightningModule]:
    module = MODULES.get(checkpoint_modality(run.checkpoint))
    if module is None:
        raise FERError(f"ckpt_path={run.path}: no fer-lightning model weights in it; pick a file from checkpoints/")
    return module


def _with_weights(run: RunCheckpoint, build: Callable[[dict], nn.Module], name: str) -> nn.Module:
    try:
        model = build(_without_weights_files(run.hyper_parameters))
    except TypeError as exc:
        raise FERError(
            f"ckpt_path={run.path}: its model settings (hyper_parameters) do not fit {name} ({exc}); "
            "use a checkpoint written by python -m fer_lightning.train"
        ) from exc
    try:
        model.load_state_dict(run.checkpoint["state_dict"])
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(exc)
        raise FERError(
            f"ckpt_path={run.path}: its weights do not fit its model settings ({first[:100]}); "
            "use a checkpoint written by python -m fer_lightning.train"
        ) from exc
    return model.eval()
