"""What a user sees while a run trains: plain progress lines where no bar draws, a warning when a step budget
overrides trainer.max_epochs, and a quick recipe for a first look."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from omegaconf import OmegaConf

from fer_lightning.budget import apply_budget
from fer_lightning.runs import build_datamodule, train_and_test
from fer_lightning.runs.instantiate import build_trainer
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


def test_no_redrawn_bar_when_stdout_is_not_a_terminal(tmp_path):
    cfg = compose_cfg(["logger=none"], tmp_path)
    trainer = build_trainer(cfg.trainer, [RichProgressBar()])
    assert not any(isinstance(c, ProgressBar) for c in trainer.callbacks)


def test_a_step_budget_says_it_overrides_max_epochs(tmp_path, data_dir, capsys):
    cfg = compose_cfg([*TINY, "modality=visible", "budget.steps=20", "trainer.max_epochs=1"], tmp_path, data_dir)
    dm = build_datamodule(cfg.dataset)
    dm.prepare_data()
    dm.setup("fit")
    budget = apply_budget(cfg, dm, overrides=["trainer.max_epochs=1"])
    err = capsys.readouterr().err
    assert budget.epochs > 1
    assert f"warning: trainer.max_epochs=1 is ignored: budget.steps=20 sets the run's length ({budget.epochs}" in err
    assert "budget.steps=null" in err
    apply_budget(cfg, dm, overrides=["seed=1"])
    assert "ignored" not in capsys.readouterr().err


def test_quick_recipe_is_a_short_step_budget_from_scratch_on_any_dataset(tmp_path):
    for dataset in ("viri", "nvie", "synthetic"):
        cfg = compose_cfg([f"dataset={dataset}", "recipe=quick"], tmp_path)
        assert OmegaConf.select(cfg, "budget.steps") <= 500 and cfg.budget.val_checks >= 2
        assert cfg.model.backbone.weights is None


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


@pytest.mark.parametrize("verbose", [False, True])
def test_lightning_info_lines_and_the_model_summary_only_with_verbose(verbose, tmp_path, caplog, capsys):
    import logging

    from lightning.pytorch.callbacks import ModelSummary

    from fer_lightning.app import quiet_libraries
    from tests.helpers.scripted import Scripted

    quiet_libraries(verbose)
    # "GPU available: ...", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES" and the like are info lines of these loggers
    assert logging.getLogger("lightning.pytorch.utilities.rank_zero").isEnabledFor(logging.INFO) is verbose
    assert logging.getLogger("lightning.pytorch.accelerators.cuda").isEnabledFor(logging.INFO) is verbose
    cfg = compose_cfg(["logger=none", f"verbose={str(verbose).lower()}", "trainer.max_epochs=1"], tmp_path)
    trainer = build_trainer(cfg.trainer)
    summaries = [cb for cb in trainer.callbacks if isinstance(cb, ModelSummary)]
    assert len(summaries) == verbose
    with caplog.at_level(logging.INFO):
        trainer.fit(Scripted())
    printed = caplog.text + "".join(capsys.readouterr())
    assert ("Total params" in printed) is verbose
    # Lightning's own table would add a FLOPs column and "Total FLOPs: 0" (it counts none for these models)
    assert "FLOPs" not in printed and "Flops" not in printed
    quiet_libraries()
