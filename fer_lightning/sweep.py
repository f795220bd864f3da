"""Multirun bookkeeping: which jobs of a sweep failed, why, and where their run dirs are.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``conf/hydra/default.yaml``). Each job
writes ``job_status.json`` into its own run dir as it ends (in the job's process, so it works with the joblib
and submitit launchers too); the launching process gathers them into ``<sweep dir>/sweep_summary.json``,
prints the failures, and makes the process exit non-zero when any job failed or never reported.

Hydra's basic sweeper raises the first failed job's exception once every job of the batch has run, which
skips ``on_multirun_end``; the summary is then written from an ``atexit`` hook, after Hydra has printed that
exception and chosen exit status 1.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fer_lightning.io import atomic_write_text

log = logging.getLogger(__name__)

STATUS = "job_status.json"
SUMMARY = "sweep_summary.json"


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def job_record(config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
    """What ``job_status.json`` holds for one finished job."""
    failed = job_return.status == JobStatus.FAILED
    value = job_return._return_value  # the property re-raises a failed job's exception
    record: dict[str, Any] = {
        "job": int(config.hydra.job.num),
        "overrides": list(job_return.overrides or []),
        "status": "failed" if failed else "completed",
        "run_dir": str(config.hydra.runtime.output_dir),
        "finished_at": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "return_value": None if failed else _number(value),
        "error": _error_line(value) if failed else None,
        "traceback": "".join(traceback.format_exception(value)) if failed else None,
    }
    return record


def gather(sweep_dir: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """The job records under ``sweep_dir`` from jobs started at ``since`` or later.

    A job dir whose ``.hydra/`` was written but that has no ``job_status.json`` is reported as ``unknown``:
    the job was killed (OOM, SIGKILL, a scheduler time limit) or is still running.
    """
    records: dict[Path, dict[str, Any]] = {}
    for overrides in sweep_dir.rglob(".hydra/overrides.yaml"):
        run_dir = overrides.parent.parent
        if overrides.stat().st_mtime < since - 1:
            continue  # a job of an earlier sweep into the same dir
        status = run_dir / STATUS
        if status.is_file() and status.stat().st_mtime >= overrides.stat().st_mtime - 1:
            records[run_dir] = json.loads(status.read_text())
            continue
        hydra_cfg = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml")
        records[run_dir] = {
            "job": OmegaConf.select(hydra_cfg, "hydra.job.num", default=None),
            "overrides": list(OmegaConf.load(overrides)),
            "status": "unknown",
            "run_dir": str(run_dir),
            "error": "the job wrote no status: it was killed or is still running (see its log)",
        }
    return sorted(records.values(), key=lambda r: (r.get("job") is None, r.get("job") or 0, r["run_dir"]))


def summarise_sweep(sweep_dir: Path, since: float = 0.0) -> dict[str, Any]:
    """The summary of the sweep's jobs started at ``since`` (a ``time.time()``) or later: counts, and the failed
    jobs' errors and run dirs; written to ``sweep_dir/sweep_summary.json`` and returned."""
    jobs = gather(sweep_dir, since)
    bad = [j for j in jobs if j["status"] != "completed"]
    summary = {
        "sweep_dir": str(sweep_dir),
        "n_jobs": len(jobs),
        "n_completed": len(jobs) - len(bad),
        "n_failed": len(bad),
        "failed": [{k: j.get(k) for k in ("job", "overrides", "status", "error", "run_dir")} for j in bad],
        "jobs": [{k: v for k, v in j.items() if k != "traceback"} for j in jobs],
    }
    atomic_write_text(sweep_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The lines printed at a sweep's end: jobs completed and failed, then each failed job's overrides, error and
    run dir."""
    head = (
        f"sweep: {summary['n_completed']} of {summary['n_jobs']} jobs completed, "
        f"{summary['n_failed']} failed ({Path(summary['sweep_dir']) / SUMMARY})"
    )
    lines = [head]
    for j in summary["failed"]:
        lines.append(f"  job {j['job']} [{' '.join(j['overrides'])}] {j['status']}: {j['error']}")
        lines.append(f"    run dir: {j['run_dir']}")
    return "\n".join(lines)


def invalid_sweep_values(overrides: list[str]) -> tuple[int, dict[str, list[str]], dict[str, list[str]]]:
    """``(planned jobs, {group: bad values}, {group: valid choices})`` for a sweep's config-group values.

    Hydra composes each job just before launching it, so an unknown value (``modality=visible,foo``) would
    abort the sweep halfway; checked here, it is refused before any job starts.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    planned, bad, choices = 1, {}, {}
    for ov in OverridesParser.create().parse_overrides(overrides):
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [str(ov.value())]
        planned *= len(values)
        options = [o for o in loader.get_group_options(ov.key_or_group) if not o.startswith("_")]
        unknown = [v for v in values if options and v not in options and v != "null"]
        if unknown:
            bad[ov.key_or_group], choices[ov.key_or_group] = unknown, options
    return planned, bad, choices


class SweepSummary(Callback):
    """Records each multirun job's outcome and reports the failures at the end of the sweep.

    Args:
        exit_on_failure: exit with status 1 after a sweep in which any job failed, even where the sweeper
            tolerated the failure (Optuna counts a failed trial and goes on).
    """

    def __init__(self, exit_on_failure: bool = True):
        self.exit_on_failure = exit_on_failure
        self._sweep_dir: Path | None = None
        self._started = 0.0
        self._reported = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check_values(config)
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._started = time.time()
        self._reported = False
        atexit.register(self._report_at_exit)

    @staticmethod
    def _check_values(config: DictConfig) -> None:
        planned, bad, choices = invalid_sweep_values(list(config.hydra.overrides.task))
        if not bad:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        invalid = [{"key": k, "values": v, "choices": choices[k]} for k, v in bad.items()]
        summary = {
            "sweep_dir": str(sweep_dir),
            "n_jobs": planned,
            "n_completed": 0,
            # refused before any job started: nothing failed, all planned jobs are counted as not started
            "n_failed": 0,
            "n_started": 0,
            "n_not_started": planned,
            "invalid": invalid,
            "failed": [],
            "jobs": [],
        }
        atomic_write_text(sweep_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
        key, values = next(iter(bad.items()))
        # SystemExit passes through Hydra's callback wrapper, which turns exceptions into warnings
        print(
            f"error: {key}={','.join(values)}: no such {key} in the sweep; choose from {', '.join(choices[key])} "
            f"(none of the {planned} jobs was started; {sweep_dir / SUMMARY})",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        record = job_record(config, job_return)
        atomic_write_text(Path(record["run_dir"]) / STATUS, json.dumps(record, indent=2) + "\n")
        if record["status"] == "failed":
            # into the job's own log file too, where a launcher's parent only sees the exception's repr
            log.error("job %s failed (%s):\n%s", record["job"], " ".join(record["overrides"]), record["traceback"])

    def _report(self) -> dict[str, Any] | None:
        if self._reported or self._sweep_dir is None or not self._sweep_dir.is_dir():
            return None
        self._reported = True
        summary = summarise_sweep(self._sweep_dir, self._started)
        print(format_summary(summary), file=sys.stderr if summary["n_failed"] else sys.stdout, flush=True)
        return summary

    def _report_at_exit(self) -> None:
        try:
            self._report()
        except Exception as exc:  # an atexit hook must not mask the sweep's own error
            print(f"sweep summary failed: {_error_line(exc)}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = self._report()
        if summary and summary["n_failed"] and self.exit_on_failure:
            # SystemExit passes through Hydra's callback wrapper, which only catches Exception
            raise SystemExit(1)
