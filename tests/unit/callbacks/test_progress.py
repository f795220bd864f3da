"""What a user sees while a run trains: plain progress lines where no bar draws, a warning when a step budget
overrides trainer.max_epochs, and a quick recipe for a first look."""

from __future__ import annotations

import pytest
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from omegaconf import OmegaConf

from fer_lightning.budget import apply_budget
from fer_lightning.runs import build_datamodule
from fer_lightning.runs.instantiate import build_trainer
from tests.conftest import TINY, compose_cfg


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
