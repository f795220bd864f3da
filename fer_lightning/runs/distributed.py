"""Many processes, one run: every rank of a DDP run works in rank 0's run dir, and any rank's failure fails the
command.

How the other ranks start, and how they learn the run dir:

- ``trainer.devices=N trainer.strategy=ddp``: Lightning's launcher runs the command again for ranks 1..N-1
  (``LOCAL_RANK`` set). It appends ``hydra.run.dir`` to ``sys.argv``, which is right for a single run but not for
  a ``-m`` sweep: the child would start the whole sweep again, in a new sweep dir. So rank 0 exports the argv of
  *its job* (:data:`ARGV_ENV`: the job's overrides, its run dir, no ``-m``) and :func:`join_run` puts it in place
  before Hydra parses anything.
- ``torchrun`` (and, by hand, ``trainer.num_nodes=N`` with ``NODE_RANK``/``MASTER_ADDR``/``MASTER_PORT`` on each
  node): every rank runs Hydra on its own, and each would name a new timestamped dir. Rank 0 publishes its dir
  in the job's c10d store (the one ``init_process_group`` uses) and the other ranks wait for it before Hydra
  starts.

A rank other than 0 writes no ``.hydra/`` and no log file of its own (:data:`RANK_SETTINGS`); only rank 0 writes
results, predictions, figures and the sweep's records.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from fer_lightning.errors import FERError

# what rank 0 hands the processes Lightning starts: {"pid": rank 0's pid, "argv": the job's command line}
ARGV_ENV = "FER_RANK_ZERO_ARGV"
# set by Lightning's launcher for the processes it starts; a sweep's next job must start its own
LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# a rank other than 0 writes nothing of Hydra's into the shared run dir (its log lines go to the console)
RANK_SETTINGS = [
    "hydra.output_subdir=null",
    "~hydra.job_logging.handlers.file",
    "hydra.job_logging.root.handlers=[console]",
]
# Hydra settings of rank 0's sweep or run dir, replaced for a rank joining the job
_OWN_HYDRA = (
    "hydra.mode",
    "hydra.run.",
    "hydra.sweep.",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.job.num",
    "hydra.job.id",
    "hydra.output_subdir",
    "hydra.job_logging",
    "hydra/job_logging",
)
_RUN_DIR_KEY = "fer_lightning/run_dir"
# processes start within seconds of each other; rank 0 publishes its dir before it loads any data
_STORE_TIMEOUT = timedelta(minutes=10)
_store: Any = None  # rank 0's store client or server, kept open until the process group takes it over


def check_strategy(strategy: Any) -> None:
    """Refuses strategies whose ranks are spawned or forked: their test predictions stay in the ranks."""
    name = str(strategy or "")
    if any(word in name for word in ("spawn", "fork", "notebook")):
        raise FERError(
            f"trainer.strategy={name}: spawned or forked processes are not supported (the test predictions stay "
            "in them); use trainer.strategy=ddp"
        )


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _quoted(path: str) -> str:
    return "'" + str(path).replace("'", "\\'") + "'"


def _has_run_dir(argv: list[str]) -> bool:
    return any(_key(a) == "hydra.run.dir" for a in argv)


def _hydra_run_dir() -> str | None:
    """This Hydra job's output dir; None outside a Hydra app (a config composed in-process has none)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    return OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None, throw_on_missing=False)


def rank_argv(argv: list[str] | None = None) -> list[str]:
    """The command line (after the program) of a rank joining this Hydra job: its config flags, the job's
    overrides, rank 0's run dir, and :data:`RANK_SETTINGS`. ``argv`` defaults to ``sys.argv[1:]``."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.hydra_config import HydraConfig

    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    flags = []
    for flag, value in (("--config-path", args.config_path), ("--config-name", args.config_name)):
        if value:
            flags += [flag, value]
    if args.config_dir:
        flags += ["--config-dir", args.config_dir]
    hydra = HydraConfig.get()
    own = [o for o in hydra.overrides.hydra if not _key(o).startswith(_OWN_HYDRA)]
    return [*flags, *hydra.overrides.task, *own, f"hydra.run.dir={_quoted(_hydra_run_dir())}", *RANK_SETTINGS]


@contextlib.contextmanager
def job_environment() -> Iterator[None]:
    """One training job of this process: exports :data:`ARGV_ENV` for the ranks Lightning may start, and
    afterwards takes back what the launch put into the environment and ends the process group, so the next job
    of a sweep starts its own ranks."""
    saved = {k: os.environ.get(k) for k in (*LAUNCH_ENV, ARGV_ENV)}
    if "LOCAL_RANK" not in os.environ and _hydra_run_dir():  # a command Lightning may launch ranks from
        os.environ[ARGV_ENV] = json.dumps({"pid": os.getpid(), "argv": rank_argv()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        end_process_group()


@contextlib.contextmanager
def kept_threads() -> Iterator[None]:
    """Lightning gives each rank its share of the CPU threads (``torch.set_num_threads``, ``OMP_NUM_THREADS``)
    when it launches them; afterwards rank 0 tests alone, and a sweep's next job trains, with the threads the
    process had (and computes what ``evaluate`` computes, to the last bit on a CPU)."""
    import torch

    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def external_rank() -> int | None:
    """This process's rank where a launcher outside Lightning started every rank (torchrun; by hand on several
    nodes: ``NODE_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set for each node's first process); else None."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and "RANK" in env:
        return int(env["RANK"])
    if "LOCAL_RANK" not in env and all(k in env for k in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT")):
        return int(env["NODE_RANK"])
    return None


def _run_dir_store(rank: int):
    from torch.distributed import PrefixStore, TCPStore

    env = os.environ
    # torchrun's agent serves the store at MASTER_ADDR:MASTER_PORT; otherwise rank 0 does, and
    # init_process_group later shares that server (multi_tenant)
    agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = TCPStore(
        env["MASTER_ADDR"],
        int(env["MASTER_PORT"]),
        is_master=rank == 0 and not agent,
        timeout=_STORE_TIMEOUT,
        wait_for_workers=False,
        multi_tenant=True,
    )
    attempt = f"{env.get('TORCHELASTIC_RUN_ID', '')}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return PrefixStore(f"{_RUN_DIR_KEY}/{attempt}", store)


def join_run(argv: list[str]) -> list[str]:
    """The command line this process runs: where it is a rank other than 0, the one that joins rank 0's job.

    Called before Hydra parses ``argv`` (``sys.argv``).
    """
    env = os.environ
    handed = env.get(ARGV_ENV)
    if env.get("LOCAL_RANK", "0") != "0" and handed:
        rank_zero = json.loads(handed)
        if rank_zero["pid"] == os.getppid():  # started by Lightning from that process
            return [argv[0], *rank_zero["argv"]]
    rank = external_rank()
    if rank is None:
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise FERError(
            "-m: a sweep cannot run under torchrun or a by-hand multi-node launch; start one launch per job, or "
            "sweep with trainer.devices=N trainer.strategy=ddp (Lightning starts the ranks of each job)"
        )
    if rank == 0 or _has_run_dir(argv):
        return argv if rank == 0 else [*argv, *RANK_SETTINGS]
    run_dir = _run_dir_store(rank).get("dir").decode()
    return [*argv, f"hydra.run.dir={_quoted(run_dir)}", *RANK_SETTINGS]


def publish_run_dir() -> None:
    """Rank 0 of an external launch tells the other ranks its run dir (they wait in :func:`join_run`)."""
    global _store
    if external_rank() != 0 or _has_run_dir(sys.argv[1:]) or not _hydra_run_dir():
        return
    _store = _run_dir_store(0)
    _store.set("dir", str(_hydra_run_dir()))


def end_process_group(trainer=None) -> None:
    """Every rank at the end of fit (``trainer``: the fit's): waits for the others, then leaves the process group,
    so that rank 0 tests on its own device (a metric's compute would otherwise wait for ranks that never test).
    Without a trainer (after a failure) it only leaves."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if trainer is not None:
        with contextlib.suppress(RuntimeError):  # a rank that failed: rank_failure reports it
            trainer.strategy.barrier("fer_lightning_end_of_fit")
    dist.destroy_process_group()


def failed_ranks(procs: list) -> list[tuple[int, int]]:
    """``(rank, exit status)`` of the processes (ranks 1, 2, ...) that exited non-zero of their own accord (not
    killed by a signal, as Lightning kills the others once one fails)."""
    return [(i, p.returncode) for i, p in enumerate(procs, start=1) if p.poll() is not None and p.returncode > 0]


def _launched(trainer) -> list:
    """The processes Lightning started for the other ranks (none on those ranks, or under torchrun)."""
    return list(getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or [])


def rank_failure(trainer, wait: float = 0.0) -> FERError | None:
    """The error to report where a rank this process launched has failed.

    ``wait``: seconds to wait for one of them to exit, where this rank's own error may be the loss of a peer
    that is still shutting down (a failed rank closes its connections before it exits).
    """
    procs = _launched(trainer)
    deadline = time.monotonic() + wait
    while procs and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.1)
    failed = failed_ranks(procs)
    if not failed:
        return None
    rank, status = failed[0]
    return FERError(
        f"rank {rank} of {trainer.world_size} failed (exit status {status}; its error is printed above); "
        "the run wrote no results"
    )


def wait_for_ranks(trainer, timeout: float = 600.0) -> FERError | None:
    """Rank 0 after fit: waits for the ranks it launched to exit (after the barrier they only tear down) and
    returns the error of one that failed, so a run with a failed rank writes no results."""
    import subprocess

    for proc in _launched(trainer):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rank_failure(trainer)
