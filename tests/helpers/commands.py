"""The commands as a user runs them: in a child process (``train_process``), or in-process through ``python -m``'s
entry (``train_cli``), and the tiny dataset such runs read."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import REPO, TINY, compose_cfg

# A run of a few short epochs on the CPU, deterministic, no logger: what a subprocess test trains.
CLI = [
    *TINY,
    "modality=visible",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "trainer.deterministic=true",
    "+trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
]


def prepare_tiny(data_dir: Path, tmp_path: Path) -> None:
    """Generates (and caches) the tiny dataset in-process, so concurrent subprocesses only read it."""
    from fer_lightning.runs import build_datamodule

    cfg = compose_cfg([*TINY, "modality=fusion", "logger=none"], tmp_path / "prepare", data_dir)
    datamodule = build_datamodule(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("fit")


def train_process(args: list[str], **kwargs) -> subprocess.Popen:
    """``python -m fer_lightning.train`` in a child process, stdout and stderr merged."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fer_lightning.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def signal_when(path: Path, proc: subprocess.Popen, signum: int, timeout: float = 900, poll: float = 0.02) -> None:
    """Sends ``signum`` to ``proc`` once ``path`` exists (or the process ended, or ``timeout`` passed)."""
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(poll)
    proc.send_signal(signum)


def train_cli(tmp_path: Path, *args: str, command: str = "train") -> subprocess.CompletedProcess:
    """``python -m fer_lightning.<command>`` as a user runs it, in-process (``hydra_entry`` + ``@hydra.main``)."""
    from hydra.core.global_hydra import GlobalHydra

    flags = [a for a in args if a.startswith("-")]  # argparse wants -m before the overrides
    argv = [command, *flags, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", *(a for a in args if a not in flags)]
    GlobalHydra.instance().clear()
    err = io.StringIO()
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        runpy.run_module(f"fer_lightning.{command}", run_name="__main__")
    GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(argv, exc.value.code, "", err.getvalue())


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command that exited 2 without a traceback (``warning:`` lines aside)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]
