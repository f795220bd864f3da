"""Logger construction: wandb that never prompts and runs offline unless the user has set it up.

A wandb run carries what a researcher groups a sweep by: ``group`` (the multirun dir name, or
``<experiment>-<dataset>-<modality>`` for a single run), ``job_type`` (the modality, or ``evaluate``) and tags
(dataset, modality, experiment). :func:`log_results` puts results.json's numbers into the run summary under the
same names, so the dashboard can show mean ± spread over seeds.
"""

from __future__ import annotations

import csv
import netrc
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from fer_lightning.io import atomic_write_text

# Hydra config groups whose choice names a run's recipe: they become tags and the single-run group's prefix.
RECIPE_GROUPS = ("experiment", "recipe")
FIGURES = ("curves.png", "confusion_matrix.png", "reliability.png")


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _run_facts(hydra: DictConfig | dict | None) -> tuple[str | None, list[str]]:
    """(the multirun dir name, or None for a single run; the recipe choices) from a run's Hydra config."""
    if hydra is None:
        return None, []
    hydra = OmegaConf.create(hydra) if isinstance(hydra, dict) else hydra
    choices = hydra.get("runtime", {}).get("choices", {}) or {}
    recipes = [str(choices[g]) for g in RECIPE_GROUPS if choices.get(g) not in (None, "null")]
    mode = getattr(hydra.get("mode"), "name", hydra.get("mode"))
    if str(mode) != "MULTIRUN":
        return None, recipes
    # a job's output dir is <sweep dir>/<job subdir>
    return Path(str(hydra.runtime.output_dir)).parent.name, recipes


def wandb_logger(
    offline: bool | None = None,
    group: str | None = None,
    tags: Iterable[str] = (),
    dataset: str = "",
    modality: str = "",
    run_hydra: DictConfig | dict | None = None,
    verbose: bool = False,
    **kwargs,
) -> WandbLogger:
    """A WandbLogger; ``offline=None`` means offline unless WANDB_MODE=online or a wandb login exists.

    Args:
        group: the wandb group; None: the multirun dir name, or ``<experiment>-<dataset>-<modality>``.
        tags: extra tags; the dataset, the modality and the experiment are added.
        run_hydra: the Hydra config of the run being logged (default: this process's), for the group and tags.
        verbose: let wandb print its own lines; False: silent (``settings.silent``).
        kwargs: the rest goes to ``wandb.init`` through WandbLogger (project, name, job_type, config, ...).
    """
    if offline is None:
        mode = os.environ.get("WANDB_MODE")
        offline = mode == "offline" or (mode not in ("online", "run") and not _has_wandb_credentials())
    if run_hydra is None and HydraConfig.initialized():
        run_hydra = HydraConfig.get()
    sweep, recipes = _run_facts(run_hydra)
    group = group or sweep or "-".join([*(recipes[:1] or ["default"]), dataset, modality])
    tags = list(dict.fromkeys(t for t in (*tags, dataset, modality, *recipes) if t))
    if isinstance(kwargs.get("config"), DictConfig):
        kwargs["config"] = OmegaConf.to_container(kwargs["config"], resolve=True)
    os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    settings = dict(kwargs.pop("settings", None) or {})
    settings.setdefault("silent", not verbose)
    logger = WandbLogger(offline=offline, group=group, tags=tags, settings=settings, **kwargs)
    # WandbLogger always passes anonymous= to wandb.init, which then warns that the setting has no effect
    logger._wandb_init.pop("anonymous", None)
    return logger


def results_summary(results: dict) -> dict[str, float | int]:
    """results.json's numbers under its own names: ``test/accuracy``, ``test/n``, ``test/accuracy_ci95_lo`` …"""
    top = ("best_val_accuracy", "train_seconds", "epochs_trained")
    summary = {k: results[k] for k in top if results.get(k) is not None}
    for key, value in results.get("test", {}).items():
        if isinstance(value, int | float):
            summary[f"test/{key}"] = value
        elif key.endswith("_ci95") and len(value) == 2:
            summary[f"test/{key}_lo"], summary[f"test/{key}_hi"] = value
    return summary


@rank_zero_only
def log_results(loggers: Iterable[Logger], results: dict, run_dir: Path) -> None:
    """Puts :func:`results_summary` into each wandb run's summary and logs the run dir's figures as images (rank 0:
    the other ranks of a multi-device run hold no wandb run)."""
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    figures = [Path(run_dir) / f for f in FIGURES if (Path(run_dir) / f).is_file()]
    for lg in wandb_loggers:
        lg.experiment.summary.update(results_summary(results))
        if figures:
            lg.experiment.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in figures})


def log_evaluation(run_cfg: DictConfig, results: dict, output_dir: Path, evaluated_run_dir: Path) -> None:
    """Logs an evaluation (results.json contents) beside its training run: the run config's wandb project,
    group and tags, ``job_type=evaluate``. Does nothing when the run config has no wandb logger."""
    node = OmegaConf.select(run_cfg, "logger.wandb")
    if not node:
        return
    hydra_yaml = Path(evaluated_run_dir) / ".hydra" / "hydra.yaml"
    # only the facts _run_facts reads: the saved Hydra node holds interpolations that resolve nowhere else
    facts = {"mode": "RUN", "runtime": {"output_dir": str(evaluated_run_dir), "choices": {}}}
    if hydra_yaml.is_file():
        saved = OmegaConf.load(hydra_yaml).hydra
        facts["mode"] = str(saved.get("mode"))
        facts["runtime"]["choices"] = {g: saved.runtime.choices.get(g) for g in RECIPE_GROUPS}
    else:  # a run trained in-process, without Hydra's files: what results.json recorded
        facts["runtime"]["choices"]["experiment"] = results.get("experiment")
    logger = instantiate(
        node, job_type="evaluate", name=f"{node.name}-evaluate", save_dir=str(output_dir), run_hydra=facts
    )
    config = OmegaConf.to_container(OmegaConf.masked_copy(run_cfg, [k for k in run_cfg if k != "hydra"]), resolve=True)
    logger.log_hyperparams({**config, "evaluated_run_dir": str(evaluated_run_dir)})
    try:
        log_results([logger], results, output_dir)
    finally:
        finish_wandb()


def finish_wandb(exit_code: int = 0) -> None:
    """Closes the active wandb run, if any: a multirun must start each job with a fresh one."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


class AppendingCSVLogger(CSVLogger):
    """A CSVLogger whose ``metrics.csv`` survives a resume in the same run dir.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, which would lose the epochs logged
    before a run was killed; this one keeps them and appends.
    """

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept = path.read_text() if path.is_file() else None
        with warnings.catch_warnings():
            # Lightning's "Previous log files in this directory will be deleted": false here, they are put back
            warnings.filterwarnings("ignore", "Experiment logs directory .* exists and is not empty")
            writer = super().experiment
        if kept:  # put back whole, or not at all, if this start is killed too
            atomic_write_text(path, kept)
            writer.metrics_keys = next(csv.reader([kept.splitlines()[0]]))
        return writer
