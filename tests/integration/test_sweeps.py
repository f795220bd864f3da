"""Multiruns: launchers, a failing job that fails alone, the sweep summary, k-fold sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from fer_lightning.errors import FERError
from fer_lightning.sweep import STATUS, SUMMARY, format_summary, job_record, summarise_sweep
from tests.conftest import REPO
from tests.helpers.commands import CLI, prepare_tiny, train_cli

ONE_EPOCH = [*CLI, "trainer.max_epochs=1"]


def multirun(args: list[str], timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "fer_lightning.train", "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("results.json"))]


def fake_job(sweep: Path, num: int, overrides: list[str], status: dict | None) -> Path:
    run_dir = sweep / str(num)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    (run_dir / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"job": {"num": num}}}))
    if status is not None:
        (run_dir / STATUS).write_text(
            json.dumps({"job": num, "overrides": overrides, "run_dir": str(run_dir), **status})
        )
    return run_dir


def test_summary_names_failed_and_silent_jobs(tmp_path):
    fake_job(tmp_path, 0, ["seed=0"], {"status": "completed", "error": None})
    failed = fake_job(tmp_path, 1, ["seed=1"], {"status": "failed", "error": "FERError: bad fold"})
    killed = fake_job(tmp_path, 2, ["seed=2"], None)
    summary = summarise_sweep(tmp_path)
    assert (summary["n_jobs"], summary["n_completed"], summary["n_failed"]) == (3, 1, 2)
    assert [(j["job"], j["status"]) for j in summary["failed"]] == [(1, "failed"), (2, "unknown")]
    assert json.loads((tmp_path / SUMMARY).read_text()) == summary
    text = format_summary(summary)
    assert "1 of 3 jobs completed, 2 failed" in text
    assert f"job 1 [seed=1] failed: FERError: bad fold\n    run dir: {failed}" in text
    assert "job 2 [seed=2] unknown: the job wrote no status" in text and str(killed) in text


def test_jobs_of_an_earlier_sweep_into_the_same_dir_are_ignored(tmp_path):
    old = fake_job(tmp_path, 0, ["seed=0"], {"status": "failed", "error": "old"})
    for p in [old / STATUS, old / ".hydra" / "overrides.yaml"]:
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    fake_job(tmp_path, 1, ["seed=1"], {"status": "completed", "error": None})
    summary = summarise_sweep(tmp_path, since=time.time() - 60)
    assert (summary["n_jobs"], summary["n_failed"]) == (1, 0)


def test_job_record_keeps_the_error_line_and_traceback(tmp_path):
    try:
        raise FERError("dataset.split.fold=9: must be in 0..2\nsecond line")
    except FERError as exc:
        error = exc
    config = OmegaConf.create({"hydra": {"job": {"num": 3}, "runtime": {"output_dir": str(tmp_path)}}})
    ret = JobReturn(overrides=["dataset.split.fold=9"], status=JobStatus.FAILED, _return_value=error)
    record = job_record(config, ret)
    assert record["status"] == "failed" and record["job"] == 3 and record["return_value"] is None
    assert record["error"] == "FERError: dataset.split.fold=9: must be in 0..2"
    assert "Traceback" in record["traceback"] and "test_job_record" in record["traceback"]
    done = job_record(config, JobReturn(overrides=[], status=JobStatus.COMPLETED, _return_value=0.75))
    assert (done["status"], done["return_value"], done["error"]) == ("completed", 0.75, None)


@pytest.mark.parametrize(
    "error", [FERError("dataset.split.fold=9: there are only 3 folds"), RuntimeError("CUDA out of memory")]
)
def test_a_sweep_with_a_failed_job_exits_1_whatever_the_error(tmp_path, error):
    """A single run exits 2 on a bad value; a sweep exits 1 when any job failed, and its summary says why."""
    import fer_lightning.train

    sweep = tmp_path / "sweep"
    with (
        mock.patch.object(fer_lightning.train, "train", side_effect=[{"best_val_accuracy": 0.5}, error]),
        mock.patch("fer_lightning.sweep.atexit.register") as at_exit,  # the summary hook, run here, not at exit
    ):
        proc = train_cli(tmp_path, "-m", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: a sweep job failed: {error}"
    (hook,), _ = at_exit.call_args
    hook()
    summary = json.loads((sweep / SUMMARY).read_text())
    assert (summary["n_jobs"], summary["n_completed"], summary["n_failed"]) == (2, 1, 1)
    assert summary["failed"][0]["error"] == f"{type(error).__name__}: {error}"


@pytest.fixture(scope="module")
def tiny_data(data_dir, tmp_path_factory) -> Path:
    prepare_tiny(data_dir, tmp_path_factory.mktemp("prepare"))
    return data_dir


@pytest.fixture(scope="module")
def fold_sweep(tiny_data, tmp_path_factory):
    """Folds 0, 1, 2 of a 3-fold split, plus a fold that does not exist: a job that fails at setup."""
    sweep = tmp_path_factory.mktemp("folds")
    proc = multirun(
        [
            *ONE_EPOCH,
            f"paths.data_dir={tiny_data}",
            f"hydra.sweep.dir={sweep}",
            "dataset.split.folds=3",
            "dataset.split.fold=0,1,2,9",
        ]
    )
    return sweep, proc


@pytest.mark.slow
def test_fold_multirun_gives_one_result_per_fold(fold_sweep):
    sweep, proc = fold_sweep
    runs = results(sweep)
    assert len(runs) == 3, proc.stdout + proc.stderr
    folds = sorted(OmegaConf.load(Path(r["run_dir"]) / ".hydra" / "config.yaml").dataset.split.fold for r in runs)
    assert folds == [0, 1, 2]
    # the test split stays fixed across folds; only train/val rotate
    assert len({tuple(r["test_samples"]) for r in runs}) == 1
    assert all(r["test"]["n"] == runs[0]["test"]["n"] > 0 for r in runs)


@pytest.mark.slow
def test_a_failing_job_fails_alone_and_the_sweep_exits_non_zero(fold_sweep):
    sweep, proc = fold_sweep
    assert proc.returncode == 1, proc.stderr[-2000:]  # a sweep with a failed job, even one failed on a bad value
    summary = json.loads((sweep / SUMMARY).read_text())
    assert (summary["n_jobs"], summary["n_completed"], summary["n_failed"]) == (4, 3, 1)
    (failed,) = summary["failed"]
    assert failed["job"] == 3 and "dataset.split.fold=9" in failed["overrides"]
    assert failed["error"].startswith("FERError: dataset.split.fold=9")
    assert failed["run_dir"] == str(sweep / "3") and not (sweep / "3" / "results.json").exists()
    assert "3 of 4 jobs completed, 1 failed" in proc.stderr and "dataset.split.fold=9" in proc.stderr


@pytest.mark.slow
def test_joblib_runs_two_jobs_in_parallel_processes(tiny_data, tmp_path):
    proc = multirun(
        [
            *ONE_EPOCH,
            f"paths.data_dir={tiny_data}",
            f"hydra.sweep.dir={tmp_path}",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "seed=0,1",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = results(tmp_path)
    assert sorted(r["seed"] for r in runs) == [0, 1]
    statuses = [json.loads(p.read_text()) for p in sorted(tmp_path.glob(f"*/{STATUS}"))]
    assert len({s["pid"] for s in statuses}) == 2, "joblib ran both jobs in one process"
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert (summary["n_jobs"], summary["n_failed"]) == (2, 0)


@pytest.mark.slow
def test_submitit_local_runs_one_job(tiny_data, tmp_path):
    proc = multirun(
        [
            *ONE_EPOCH,
            f"paths.data_dir={tiny_data}",
            f"hydra.sweep.dir={tmp_path}",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=20",
            "seed=3",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = results(tmp_path)
    assert run["seed"] == 3 and run["run_dir"] == str((tmp_path / "0").resolve())
    assert (tmp_path / ".submitit").is_dir()
    assert json.loads((tmp_path / SUMMARY).read_text())["n_completed"] == 1
