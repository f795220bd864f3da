"""``python -m fer_lightning.prepare dataset=<name> [overrides]``: prepare a dataset and print its counts."""

from __future__ import annotations

import sys
import warnings

from omegaconf import DictConfig

from fer_lightning.app import command, console_entry
from fer_lightning.data.summary import print_dataset_summary
from fer_lightning.errors import FERError
from fer_lightning.runs import build_datamodule


def prepare(cfg: DictConfig) -> dict:
    """Runs the dataset's ``prepare_data`` (download, verify, extract, pair, split) and prints the summary."""
    if cfg.get("dataset") is None:
        raise FERError("dataset is not set: pass dataset=<name>, e.g. dataset=viri (--help lists the datasets)")
    datamodule = build_datamodule(cfg.dataset)
    datamodule.prepare_data()
    return print_dataset_summary(datamodule.root, datamodule.name, datamodule.configured_classes)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # A warning here is about the user's data (e.g. an archive kept with dataset.verify=false): show the
    # message, not the source line that raised it.
    print(f"warning: {message}", file=file or sys.stderr)


def _warnings_as_lines() -> None:
    warnings.showwarning = _show_warning


main = command("prepare", prepare, setup=_warnings_as_lines)
cli = console_entry(main)


if __name__ == "__main__":
    cli()
