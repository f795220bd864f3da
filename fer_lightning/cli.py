"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import functools
import logging
import sys
import warnings

from hydra.errors import InstantiationException

from fer_lightning.errors import FERError


def report_errors(fn):
    """Turns a :class:`FERError` into one ``error:`` line on stderr and exit status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FERError as exc:
            _exit_with(exc)
        except InstantiationException as exc:
            # Hydra wraps errors raised in constructors; ours are still expected errors.
            if isinstance(exc.__cause__, FERError):
                _exit_with(exc.__cause__)
            raise

    return wrapper


def _exit_with(exc: FERError):
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(2)


def quiet_libraries() -> None:
    """Silences advice that does not apply to this project's runs (e.g. worker counts on tiny CPU datasets)."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*`isinstance.*treespec.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
