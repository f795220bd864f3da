"""Objects from config nodes: datamodule, model, trainer, callbacks, loggers. The one place Hydra instantiates."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from fer_lightning.data.manifest_datamodule import ManifestDataModule
from fer_lightning.errors import FERError
from fer_lightning.runs.checkpoint import RUN_CONFIG, RunCheckpoint

# Trainer limits that make a debug run short; evaluation always tests the whole split.
RUN_LIMITS = ("fast_dev_run", "limit_test_batches", "max_steps", "limit_train_batches", "limit_val_batches")
# Where a run trained on several devices or nodes: evaluation scores on one device, as a single-device run would
DEVICE_KEYS = ("devices", "strategy", "num_nodes")


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
    return _instantiate(trainer_cfg, callbacks=callbacks or [], logger=loggers or False)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def world_size(trainer_cfg: DictConfig) -> int:
    """The number of processes the trainer settings train with (devices x nodes), as Lightning resolves them
    (``devices=auto`` or ``-1`` on a GPU host: every visible GPU); nothing is launched."""
    spec = {k: _plain(trainer_cfg[k]) for k in ("_target_", "accelerator", *DEVICE_KEYS) if k in trainer_cfg}
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return int(_instantiate(spec, **quiet).world_size)


def eval_trainer(
    trainer_cfg: DictConfig, callbacks: list | None = None, loggers: list | None = None, devices: int | list = 1
) -> L.Trainer:
    """The run's trainer settings (accelerator, precision) on one device, without its limits.

    ``devices``: which one, as Lightning takes it (1: the first; ``[2]``: GPU 2).
    """
    cfg = trainer_cfg.copy()
    with open_dict(cfg):
        for key in (*RUN_LIMITS, *DEVICE_KEYS):
            cfg.pop(key, None)
        cfg.devices = devices
    return build_trainer(cfg, callbacks, loggers)


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
