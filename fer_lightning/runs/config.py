"""Run configs: checked before anything is built, and evaluate's overrides applied onto a run's saved config."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from fer_lightning.errors import FERError
from fer_lightning.runs.distributed import check_strategy

# Keys of evaluate's own config; every other override is applied to the run's saved config.
OWN_KEYS = (
    "ckpt_path",
    "split",
    "task_name",
    "hydra",
    "paths.output_dir",
    "paths.log_dir",
    "allow_manifest_change",
    "corrupt",
    "missing",
    # robustness
    "ckpt_paths",
    "kinds",
    "severities",
    "modalities",
    "corrupt_seed",
    "include_missing",
)
# Config groups that would replace the run's settings wholesale (dataset= would reset its split, size and
# classes): they would change what the checkpoint is, so they cannot be overridden at evaluation.
GLOBAL_GROUPS = ("dataset", "modality", "experiment", "recipe", "debug", "hparams_search")


# evaluation scores on one device whatever the run trained on (runs/build.py eval_trainer)
ONE_DEVICE_KEYS = {"trainer.devices": (1, "1"), "trainer.strategy": ("auto",), "trainer.num_nodes": (1, "1")}


def _check_one_device(key: str, value) -> None:
    if value not in ONE_DEVICE_KEYS[key]:
        raise FERError(
            f"{key}={value}: evaluation scores the whole split on one device (the first one; choose it with "
            "CUDA_VISIBLE_DEVICES); drop the override"
        )


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def experiment_name() -> str | None:
    hydra_cfg = _hydra()
    return hydra_cfg.runtime.choices.get("experiment") if hydra_cfg is not None else None


def task_overrides() -> list[str]:
    """The command line's overrides of this run (empty outside Hydra)."""
    hydra_cfg = _hydra()
    return list(hydra_cfg.overrides.task) if hydra_cfg is not None else []


def _int(cfg: DictConfig, key: str, minimum: int, fix: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FERError(f"{key}={value!r}: {fix}")


def check_run_config(cfg: DictConfig) -> None:
    """Refuses values that would otherwise fail deep inside Lightning with a traceback (one line each).

    Dataset values (sizes, batch sizes, regexes) are checked where they enter, by the datamodule.
    """
    _int(cfg, "seed", 0, "the seed must be a non-negative integer, e.g. seed=3")
    check_strategy(OmegaConf.select(cfg, "trainer.strategy"))
    _int(cfg, "trainer.max_epochs", 1, "train for at least one epoch (trainer.max_epochs=12), or -1 with max_steps")
    if OmegaConf.select(cfg, "trainer.max_epochs") == -1:
        return
    _int(cfg, "trainer.max_steps", -1, "use -1 (no limit) or a positive number of optimiser steps")


def apply_overrides(run_cfg: DictConfig, composed: DictConfig, overrides: list[str]) -> list[str]:
    """Copies the overridden keys of evaluate's composed config onto the run's saved config.

    ``composed`` is evaluate's own config (the train defaults plus the command line), so key names were
    already validated by Hydra. Returns the overrides applied.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    applied = []
    for ov in OverridesParser.create().parse_overrides(overrides):
        key = ov.key_or_group
        if key in OWN_KEYS or any(key.startswith(f"{k}.") for k in OWN_KEYS) or key.startswith("hydra"):
            continue
        if ov.is_sweep_override():
            raise FERError(f"{key}: evaluate takes one value per key, not a sweep")
        if key in GLOBAL_GROUPS:
            raise FERError(
                f"{key}={ov.value()}: evaluate uses the checkpoint's own {key}; override single keys "
                "instead (e.g. dataset.split.fold=1)"
            )
        if key in ONE_DEVICE_KEYS:
            _check_one_device(key, ov.value())
            continue
        node = key.replace("/", ".")
        # A config group such as augment=none takes the whole composed node; a key takes its value.
        value = None if ov.is_delete() else OmegaConf.select(composed, node)
        with open_dict(run_cfg):
            OmegaConf.update(run_cfg, node, value, merge=False, force_add=True)
        applied.append(ov.input_line)
    return applied


def evaluation_config(run_config: DictConfig, composed: DictConfig) -> tuple[DictConfig, list[str]]:
    """The run's saved config with the command line's overrides applied and this command's output dir."""
    run_cfg = run_config.copy()
    applied = apply_overrides(run_cfg, composed, task_overrides())
    with open_dict(run_cfg):
        run_cfg.paths.output_dir = str(composed.paths.output_dir)
    return run_cfg, applied
