"""A two-seed multirun reported as one row."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY


@pytest.mark.slow
def test_two_seed_multirun_gives_one_row_with_two_runs(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "fer_lightning.train",
        "-m",
        "seed=0,1",
        "debug=fast",
        *TINY,
        f"paths.data_dir={data_dir}",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        f"hydra.sweep.dir={sweep}",
        "~callbacks.progress_bar",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run(
        [sys.executable, "-m", "fer_lightning.report", str(sweep)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| synthetic")]
    assert len(rows) == 1
    assert rows[0].startswith("| synthetic | fusion | - | 2 |")
    assert (sweep / "report.md").is_file() and (sweep / "report.csv").is_file()
