"""Run configs: checked before anything is built, and evaluate's overrides applied onto a run's saved config."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from fer_lightning.budget import RULES as BUDGET_RULES
from fer_lightning.errors import FERError
from fer_lightning.models.lightning import check_optimizer_numbers
from fer_lightning.runs.distributed import check_strategy
from fer_lightning.validation import Number, check_config

# Keys of evaluate's own config; every other override is applied to the run's saved config.
OWN_KEYS = (
    "ckpt_path",
    "split",
    "task_name",
    "hydra",
    "paths.output_dir",
    "paths.log_dir",
    "allow_manifest_change",
    "verbose",
    "corrupt",
    "missing",
    "calibrate",
    # export
    "format",
    "parity_samples",
    "tolerance",
    "opset",
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
# What evaluation takes from a run's trainer settings (runs/build.eval_trainer): where and how precisely to
# compute; nothing that limits the split tested or writes files.
EVAL_TRAINER_KEYS = (
    "_target_",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "deterministic",
    "benchmark",
    "enable_progress_bar",
    "inference_mode",
)
# Dataset keys that only preparing reads (the datamodules' build_dataset); evaluation prepares nothing.
PREPARATION_KEYS = (
    "generator",
    "download",
    "verify",
    "base_url",
    "retries",
    "pairing",
    "sixteen_bit",
    "sixteen_bit_range",
)
# Keys an evaluation cannot apply, and why: it would otherwise record an override that changed nothing.
NOT_AT_EVALUATION = {
    "model": "the checkpoint's model is rebuilt from its own saved settings and weights; train a run with it instead",
    "augment": "evaluation does not augment; only training uses it",
    "budget": "evaluation does not train; only training uses it",
    "callbacks": "evaluation does not train; only training uses it",
    "faces": "a checkpoint is tested and predicts on crops made as its training crops were (docs/faces.md); train "
    "a run with other face settings instead",
}


# evaluation scores on one device whatever the run trained on (runs/instantiate.py eval_trainer)
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
    """The ``experiment=`` chosen on the command line or in the defaults; None outside Hydra or without one."""
    hydra_cfg = _hydra()
    return hydra_cfg.runtime.choices.get("experiment") if hydra_cfg is not None else None


def task_overrides() -> list[str]:
    """The command line's overrides of this run (empty outside Hydra)."""
    hydra_cfg = _hydra()
    return list(hydra_cfg.overrides.task) if hydra_cfg is not None else []


# What the run layer checks on the composed config before anything is built (one line each, naming the key); each
# component's own rules join them, so a bad value is refused before any data is prepared.
RUN_RULES = {
    "seed": Number(int, 0, fix="the seed must be a non-negative integer, e.g. seed=3"),
    "trainer.max_epochs": Number(int, 1, fix="train for at least one epoch, e.g. trainer.max_epochs=12"),
    "trainer.max_steps": Number(int, -1, fix="use -1 (no limit) or a positive number of optimiser steps"),
    **BUDGET_RULES,
}


def check_run_config(cfg: DictConfig) -> None:
    """Refuses values that would otherwise fail deep inside Lightning with a traceback (one line each).

    Dataset values (sizes, batch sizes, regexes) are checked where they enter, by the datamodule.
    """
    check_config(cfg, RUN_RULES)
    # Before any data is prepared; the scheduler's numbers follow the budget, so the model checks those.
    check_optimizer_numbers("optimizer", OmegaConf.select(cfg, "model.optimizer"))
    check_strategy(OmegaConf.select(cfg, "trainer.strategy"))


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
        if node.split(".")[0] == "faces" or node.startswith("dataset.faces"):
            given = OmegaConf.select(composed, "dataset.faces" if node.startswith("dataset") else "faces")
            check_same_faces(ov.input_line, given, run_cfg.get("faces"))
            continue
        _check_applies(ov.input_line, node)
        # A config group such as augment=none takes the whole composed node; a key takes its value.
        value = None if ov.is_delete() else OmegaConf.select(composed, node)
        with open_dict(run_cfg):
            OmegaConf.update(run_cfg, node, value, merge=False, force_add=True)
        applied.append(ov.input_line)
    return applied


def _check_applies(override: str, node: str) -> None:
    """Refuses an override that evaluation cannot apply (one line that says why)."""
    top, _, rest = node.partition(".")
    first = rest.split(".")[0]
    if top in NOT_AT_EVALUATION:
        why = NOT_AT_EVALUATION[top]
    elif top == "trainer" and rest and first not in EVAL_TRAINER_KEYS:
        keep = ", ".join(k for k in EVAL_TRAINER_KEYS if not k.startswith("_"))
        why = f"evaluation tests the whole split and takes only the trainer's {keep}"
    elif top == "dataset" and first in PREPARATION_KEYS:
        why = "evaluation reads the prepared dataset and prepares nothing; give it to python -m fer_lightning.prepare"
    else:
        return
    raise FERError(f"{override}: not applied at evaluation: {why}")


def check_same_faces(override: str, given, run_faces, where: str = "evaluation") -> None:
    """Refuses face settings (the command line's ``faces`` node) other than the run's: a checkpoint is tested and
    predicts on crops made as its training crops were. The same settings are accepted (nothing to apply)."""
    from fer_lightning.faces import FaceSettings

    run = FaceSettings.from_config(run_faces)
    if FaceSettings.from_config(given) != run:
        why = NOT_AT_EVALUATION["faces"]
        raise FERError(f"{override}: not applied at {where}: the run used faces={run.mode}; {why}")


def evaluation_config(run_config: DictConfig, composed: DictConfig) -> tuple[DictConfig, list[str]]:
    """The run's saved config with the command line's overrides applied and this command's output dir."""
    run_cfg = run_config.copy()
    applied = apply_overrides(run_cfg, composed, task_overrides())
    with open_dict(run_cfg):
        run_cfg.paths.output_dir = str(composed.paths.output_dir)
        # this command's, not the training run's (the wandb logger of the evaluation reads it)
        run_cfg.verbose = bool(composed.get("verbose", False))
    return run_cfg, applied
