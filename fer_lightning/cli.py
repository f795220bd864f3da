"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import functools
import logging
import sys
import warnings

from fer_lightning.errors import FERError


def report_errors(fn):
    """Turns a :class:`FERError` into one ``error:`` line on stderr and exit status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FERError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper


def quiet_libraries() -> None:
    """Silences advice that does not apply to this project's runs (e.g. worker counts on tiny CPU datasets)."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*`isinstance.*treespec.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
