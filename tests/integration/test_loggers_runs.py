"""Loggers in training runs and multiruns: the offline wandb summary, group and tags."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY, compose_cfg
from tests.helpers.wandb_runs import offline_runs, read_run


def test_single_run_summary_holds_the_test_metrics_and_figures(tmp_path, data_dir, wandb_offline):
    from fer_lightning.train import run as fer_run

    run = tmp_path / "run"
    fer_run(compose_cfg([*TINY, "modality=visible", "debug=fast", "logger=wandb"], run, data_dir))
    (path,) = offline_runs(run)
    logged = read_run(path)
    results = json.loads((run / "results.json").read_text())
    summary = logged["summary"]
    assert summary["test/accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert summary["test/n"] == results["test"]["n"] == 15
    lo, hi = results["test"]["accuracy_ci95"]
    assert (summary["test/accuracy_ci95_lo"], summary["test/accuracy_ci95_hi"]) == pytest.approx((lo, hi))
    assert summary["train_seconds"] == pytest.approx(results["train_seconds"])
    assert summary["test/ece"] == pytest.approx(results["test"]["ece"]) and "test/ece_ci95_hi" in summary
    assert {"figures/curves", "figures/confusion_matrix", "figures/reliability"} <= logged["history_keys"]
    # no experiment given: the recipe names the group (the synthetic default is recipe=short)
    assert logged["group"] == "short-synthetic-visible" and logged["job_type"] == "visible"
    assert {"synthetic", "visible"} <= set(logged["tags"])
    config = logged["config"]
    assert config["seed"] == 0 and config["fold"] == 0  # top level, for the dashboard's group-by
    assert config["model"]["backbone"]["name"] == "resnet18"  # the resolved run config
    assert config["paths"]["output_dir"] == str(run)


@pytest.mark.slow
def test_two_seed_multirun_shares_group_and_tags(tmp_path, data_dir):
    sweep = tmp_path / "seeds-sweep"
    args = [*TINY, "modality=visible", "debug=fast", "logger=wandb", f"paths.data_dir={data_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "NETRC": str(tmp_path / "no-netrc")}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "fer_lightning.train", "-m", "seed=0,1", *args, f"hydra.sweep.dir={sweep}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [read_run(p) for p in offline_runs(sweep)]
    assert len(runs) == 2
    assert {r["group"] for r in runs} == {"seeds-sweep"}
    assert all({"synthetic", "visible"} <= set(r["tags"]) and r["job_type"] == "visible" for r in runs)
    assert sorted(r["config"]["seed"] for r in runs) == [0, 1]
    assert all(r["summary"]["test/n"] == 15 for r in runs)
