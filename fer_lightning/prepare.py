"""``python -m fer_lightning.prepare dataset=<name> [overrides]``: prepare a dataset and print its counts."""

from __future__ import annotations

import sys
import warnings

import hydra
from omegaconf import DictConfig

from fer_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fer_lightning.app import hydra_entry, quiet_libraries, report_errors
from fer_lightning.data.summary import print_summary
from fer_lightning.runs import build_datamodule


def prepare(cfg: DictConfig) -> dict:
    """Runs the dataset's ``prepare_data`` (download, verify, extract, pair, split) and prints the summary."""
    datamodule = build_datamodule(cfg.dataset)
    datamodule.prepare_data()
    return print_summary(datamodule.root, datamodule.name, datamodule.configured_classes)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # A warning here is about the user's data (e.g. an archive kept with dataset.verify=false): show the
    # message, not the source line that raised it.
    print(f"warning: {message}", file=file or sys.stderr)


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
@report_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    warnings.showwarning = _show_warning
    prepare(cfg)


if __name__ == "__main__":
    hydra_entry(main)
