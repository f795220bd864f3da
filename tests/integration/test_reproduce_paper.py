"""scripts/reproduce_paper.sh end to end, on tiny synthetic data in place of VIRI (one seed, one epoch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, TINY

MODALITIES = ("infrared", "fusion", "visible")


@pytest.mark.slow
def test_reproduce_paper_trains_infrared_then_fusion_from_it_then_visible_and_prints_the_table(tmp_path, data_dir):
    out = tmp_path / "paper"
    env = {**os.environ, "DATASETS": "viri", "SEEDS": "0", "OUT": str(out), "PYTHON": sys.executable}
    env["PYTHONPATH"] = str(REPO)
    tiny = [
        "dataset=synthetic",
        *TINY,
        f"paths.data_dir={data_dir}",
        "logger=none",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "model.backbone.weights=null",
        "augment.offline_copies=0",
    ]
    command = ["bash", str(REPO / "scripts" / "reproduce_paper.sh"), *tiny]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("reproduce: viri ")]
    assert started == list(MODALITIES)
    runs = {m: out / "viri" / m / "seed0" for m in MODALITIES}
    results = {m: json.loads((d / "results.json").read_text()) for m, d in runs.items()}
    assert {m: r["experiment"] for m, r in results.items()} == {m: f"paper_viri_{m}" for m in MODALITIES}
    assert all(r["dataset"] == "synthetic" and r["seed"] == 0 and r["test"]["n"] == 15 for r in results.values())
    # the fusion run's infrared branch started from the checkpoint the infrared run tested
    fusion = OmegaConf.load(runs["fusion"] / ".hydra" / "config.yaml")
    assert fusion.model.infrared_init == results["infrared"]["checkpoint"]
    # each finished run kept only the checkpoint it tested (keep=tested), the infrared one included
    for m, run in runs.items():
        assert [p.name for p in (run / "checkpoints").iterdir()] == [Path(results[m]["checkpoint"]).name]
    # the table beside the study's accuracy, which synthetic data has none of: it is VIRI's and NVIE's
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| synthetic |")]
    assert len(rows) == 3 and all(row.endswith("| - |") for row in rows)
    assert "study accuracy (%)" in proc.stdout
    # the same command again continues where it stopped: here, nothing left to train
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("has its results; skipped") == 3, again.stderr[-2000:]
