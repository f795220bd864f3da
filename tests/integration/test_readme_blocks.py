"""The README's cheap command blocks run as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers.readme_blocks import cheap_lines


@pytest.mark.slow
def test_cheap_blocks_run_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    # `python` is this interpreter; this checkout's package comes first, wherever the command runs
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["WANDB_MODE"] = "offline"
    for line in cheap_lines():
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "data" / "synthetic" / "manifest.csv").is_file()
    assert list((tmp_path / "logs" / "train" / "runs").glob("*/results.json"))
