"""``python -m fer_lightning.train [overrides]``: fit, test the best-validation checkpoint, write results.json."""

from __future__ import annotations

import sys

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fer_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fer_lightning.app import CONF_DIR, fail, hydra_entry, quiet_libraries, report_errors
from fer_lightning.errors import FERError
from fer_lightning.loggers import finish_wandb
from fer_lightning.runs import train_and_test
from fer_lightning.runs.distributed import job_environment, join_run, publish_run_dir


def train(cfg: DictConfig) -> dict | None:
    """Fits and tests one model as ``cfg`` describes; returns the contents of results.json (None on a rank other
    than 0 of a multi-device run)."""
    results, _ = train_and_test(cfg)
    return results


def run(cfg: DictConfig) -> float | None:
    """Trains, always closing wandb; returns the best validation accuracy for sweepers."""
    quiet_libraries(bool(cfg.get("verbose", False)))
    publish_run_dir()
    try:
        with job_environment():
            results = train(cfg)
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finish_wandb()
    if results is None:
        return None
    value = results["best_val_accuracy"]
    return None if value is None or np.isnan(value) else value


# an absolute path: Hydra reads a relative one against the package when main's module is not __main__ (the
# console script fer-train), and would look for a package named conf
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The ``@hydra.main`` body: a single run reports a bad value as one ``error:`` line (exit 2); a multirun job
    raises it instead so that only that job fails. Returns the best validation accuracy (a sweeper's objective)."""
    # In a multirun a failing job must fail alone: an exception lets Hydra record it and run the other jobs
    # (fer_lightning.sweep.SweepSummary reports it); report_errors' sys.exit(2) would end the whole sweep.
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return run(cfg)
    return report_errors(run)(cfg)


def cli() -> None:
    """The console script ``fer-train``: the same as ``python -m fer_lightning.train``."""
    # a rank other than 0 takes rank 0's job and run dir (fer_lightning/runs/distributed.py)
    try:
        sys.argv = join_run(sys.argv)
    except FERError as exc:
        fail(str(exc))
    hydra_entry(main)


if __name__ == "__main__":
    # Launchers that pickle the task (joblib, submitit) pickle functions of __main__ by value, with every global
    # they reach, and some of those cannot be pickled; the importable module's run() goes by reference.
    from fer_lightning import train as _importable

    run = _importable.run
    cli()
