"""Objects from config nodes: datamodule, model, trainer, callbacks, loggers. The one place Hydra instantiates."""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from fer_lightning.data.manifest_datamodule import ManifestDataModule
from fer_lightning.errors import FERError
from fer_lightning.runs.checkpoint import RUN_CONFIG, RunCheckpoint

# Trainer limits that make a debug run short; evaluation always tests the whole split.
RUN_LIMITS = ("fast_dev_run", "limit_test_batches", "max_steps", "limit_train_batches", "limit_val_batches")


def _instantiate(node: Any, **kwargs: Any) -> Any:
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        # Hydra wraps what a constructor raises; ours are expected errors and stay one line.
        cause = exc.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, FERError):
            raise cause from None
        raise


def build_datamodule(dataset_cfg: DictConfig) -> ManifestDataModule:
    spec = OmegaConf.to_container(dataset_cfg, resolve=True)
    # run dirs saved before the recipes held model.backbone.weights carry it here as dataset.pretrained
    spec.pop("pretrained", None)
    return _instantiate(spec)


def build_model(model_cfg: DictConfig, classes: list[str]) -> L.LightningModule:
    return _instantiate(model_cfg, num_classes=len(classes), class_names=classes)


def build_group(group: DictConfig | None) -> list:
    """Every node of a config group such as ``callbacks`` or ``logger`` that names a ``_target_``."""
    if not group:
        return []
    return [_instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def build_trainer(trainer_cfg: DictConfig, callbacks: list | None = None, loggers: list | None = None) -> L.Trainer:
    callbacks = list(callbacks or [])
    if not sys.stdout.isatty():
        # a log file, not a terminal: redrawn bars would fill it with frames; callbacks.progress_log prints lines
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        trainer_cfg = trainer_cfg.copy()
        with open_dict(trainer_cfg):
            trainer_cfg.enable_progress_bar = False
    return _instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)


def eval_trainer(trainer_cfg: DictConfig) -> L.Trainer:
    """The run's trainer settings (device, precision) without its limits, callbacks or loggers."""
    cfg = trainer_cfg.copy()
    with open_dict(cfg):
        for key in RUN_LIMITS:
            cfg.pop(key, None)
    return build_trainer(cfg)


def model_from_checkpoint(run: RunCheckpoint, classes: list[str] | None = None) -> L.LightningModule:
    """The run's model class and settings with the checkpoint's weights, in eval mode."""
    model_cfg = run.config.model.copy()
    with open_dict(model_cfg):
        # The checkpoint holds every weight: no ImageNet download, no infrared-branch init file needed.
        model_cfg.backbone.weights = None
        if "infrared_backbone" in model_cfg and model_cfg.infrared_backbone:
            model_cfg.infrared_backbone.weights = None
        if "infrared_init" in model_cfg:
            model_cfg.infrared_init = None
    model = build_model(model_cfg, classes or run.classes)
    try:
        model.load_state_dict(run.checkpoint["state_dict"])
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(exc)
        raise FERError(
            f"ckpt_path={run.path}: weights do not fit the run config's model ({first[:100]}); "
            f"was {run.run_dir / RUN_CONFIG} edited?"
        ) from exc
    return model.eval()
