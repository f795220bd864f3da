"""Progress lines in a training run, and every command's --help in a child process."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fer_lightning.runs import train_and_test
from tests.conftest import REPO, TINY, compose_cfg

LINE = re.compile(
    r"^epoch (\d+)/3  step (\d+)/(\d+)  train/loss \d+\.\d{4}  val/loss \d+\.\d{4}  val/accuracy \d\.\d{4}  "
    r"elapsed \d+:\d\d:\d\d  eta (\d+:\d\d:\d\d|\?)$"
)


def test_progress_lines_reach_train_log_and_a_redirected_stdout(tmp_path, data_dir, capsys):
    cfg = compose_cfg([*TINY, "modality=visible", "logger=none", "trainer.max_epochs=3"], tmp_path / "run", data_dir)
    train_and_test(cfg)
    logged = [line for line in (tmp_path / "run" / "train.log").read_text().splitlines() if line.startswith("epoch")]
    assert len(logged) == 3, logged  # one per validation check
    matches = [LINE.match(line) for line in logged]
    assert all(matches), logged
    assert [int(m.group(1)) for m in matches] == [1, 2, 3]
    steps = [int(m.group(2)) for m in matches]
    assert steps == sorted(steps) and steps[-1] == int(matches[-1].group(3))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert printed == logged  # pytest's captured stdout is not a terminal


COMMANDS = ("train", "prepare", "evaluate", "predict", "explain", "robustness", "report", "compare", "bench")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_that_exits_0(command):
    proc = subprocess.run(
        [sys.executable, "-m", f"fer_lightning.{command}", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "fer_lightning" in proc.stdout and "Traceback" not in proc.stderr
    if command in ("evaluate", "predict", "explain", "robustness"):
        # the checkpoint fixes dataset, modality and model: no training groups are offered
        assert f"python -m fer_lightning.{command} ckpt_path=" in proc.stdout
        assert "Config groups" not in proc.stdout and "experiment:" not in proc.stdout
