"""What every command module shares: expected errors as one ``error:`` line (exit 2), Hydra's own override and
composition errors in the same form, and libraries kept quiet about advice that does not apply here."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig

from fer_lightning import resolvers  # noqa: F401  (registers the config resolvers every command's config uses)
from fer_lightning.errors import expected_error, one_line, shortened

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def fail(message: str, status: int = 2, label: str = "error"):
    """Prints ``<label>: <message>`` on stderr and exits with ``status`` (2: bad input), without a traceback."""
    print(f"{label}: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def report_errors(fn):
    """Turns a :class:`FERError` into one ``error:`` line on stderr and exit status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = expected_error(exc)
            if error is None:
                raise
            fail(str(error), error.exit_status, error.label)

    return wrapper


def command(config_name: str, run: Callable[[DictConfig], object], setup: Callable[[], None] | None = None):
    """The ``main`` of a command module: Hydra composes ``conf/<config_name>.yaml``, then ``run(cfg)``, with
    expected errors as one line. Start it with :func:`hydra_entry`."""

    # an absolute path: Hydra reads a relative one against the module defining main, which is this one
    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    @report_errors
    def main(cfg: DictConfig) -> None:
        quiet_libraries(bool(cfg.get("verbose", False)))
        if setup is not None:
            setup()
        run(cfg)

    return main


def hydra_error_line(exc: Exception) -> str:
    """One line for an error Hydra raises before the command runs, with the fix."""
    text = one_line(exc)
    if isinstance(exc, OverrideParseException):
        bad = str(getattr(exc, "override", "") or "")
        key, _, value = bad.partition("=")
        hint = f"quote the value: '{key}=\"{value}\"'" if key and value else "check the key=value syntax"
        return f"cannot parse the override {bad!r}: {hint}"
    if isinstance(exc, MissingConfigException):
        found = re.search(r"Could not find '([^']+)'", text)
        missing = found.group(1) if found else (exc.missing_cfg_file or "")
        group, _, value = missing.rpartition("/")
        options = ", ".join(o for o in exc.options or [] if not o.startswith("_"))
        if group and options:
            return f"{group}={value}: no such {group}; choose one of {options}"
        return f"{missing or text}: no such config; check the name"
    if isinstance(exc, ConfigCompositionException):
        key = re.search(r"override '([^']+)'", text)
        cause = one_line(exc.__cause__).split(" full_key")[0] if exc.__cause__ else text
        if key:
            return f"{key.group(1)}: {cause}; check the key name (a new key needs a leading +)"
        return text
    return text


def console_entry(
    main: Callable[[], object], argv: Callable[[list[str]], list[str]] | None = None
) -> Callable[[], None]:
    """What the console script ``fer-<command>`` calls: :func:`hydra_entry` on the command's ``main``, exactly what
    ``python -m fer_lightning.<command>`` runs; ``argv`` rewrites the command line first."""

    def cli() -> None:
        if argv is not None:
            sys.argv = argv(sys.argv)
        hydra_entry(main)

    return cli


def hydra_entry(main: Callable[[], object]) -> None:
    """Runs a ``@hydra.main`` function so that Hydra's own errors end as one ``error:`` line, exit 2.

    Hydra prints its composition errors itself and exits 1; with HYDRA_FULL_ERROR it raises them instead, and
    they are reported here. A sweep in which any job failed exits 1, whatever the job's error (a bad value
    included: that is exit 2 only for a single run); ``sweep_summary.json`` and the summary printed at exit give
    each failed job's error and run dir.
    """
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except (OverrideParseException, ConfigCompositionException) as exc:
        fail(hydra_error_line(exc))
    except Exception as exc:
        if "-m" in sys.argv or "--multirun" in sys.argv:
            # Hydra's sweeper re-raises the first failed job's exception once every job has run.
            fail(f"a sweep job failed: {shortened(exc, 200)}", status=1)
        error = expected_error(exc)
        if error is not None:
            fail(str(error))
        raise


# Lightning's info lines (devices found, model summary decisions, "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES") come from
# these loggers; they are shown only with verbose=true.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def quiet_libraries(verbose: bool = False) -> None:
    """Silences advice that does not apply to this project's runs (e.g. worker counts on tiny CPU datasets) and,
    unless ``verbose``, Lightning's info lines (wandb's are silenced by :func:`fer_lightning.loggers.wandb_logger`).
    """
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*`isinstance.*treespec.*")
    level = logging.INFO if verbose else logging.WARNING
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(level)
