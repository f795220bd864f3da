"""evaluate: a checkpoint tested with its run's saved config reproduces the run's test metrics."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.runs import load_run_checkpoint as load_checkpoint
from tests.conftest import REPO
from tests.helpers.eval_runs import compose_app, tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    return tiny_run(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def run_results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _evaluate(ckpt: Path, out: Path, *extra: str) -> dict:
    overrides = [f"ckpt_path={ckpt}", *extra]
    return evaluate(compose_app("eval", overrides, out))


def test_evaluate_reproduces_the_runs_test_metrics(run_dir, run_results, tmp_path):
    results = _evaluate(Path(run_results["best_checkpoint"]), tmp_path)
    ours, theirs = results["test"], run_results["test"]
    assert ours["n"] == theirs["n"] > 0
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    for key in ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "accuracy_ci95", "f1_macro_ci95"):
        assert ours[key] == pytest.approx(theirs[key]), key
    assert results["test_samples"] == run_results["test_samples"]
    assert results["dataset"] == "synthetic" and results["modality"] == "fusion"
    assert results["manifest_changed"] is False and results["split_source"] == "prepared"
    assert (tmp_path / "results.json").is_file() and (tmp_path / "confusion_matrix.png").is_file()
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == ours["n"]
    assert sum(r["label"] == r["pred"] for r in rows) == round(ours["accuracy"] * ours["n"])


def test_training_run_writes_curves_without_a_logger(run_dir):
    # the tiny run trains with logger=none: curves.png must not depend on the CSV logger
    assert (run_dir / "curves.png").stat().st_size > 0


def test_overrides_are_applied_to_the_runs_config(run_dir, tmp_path, capsys):
    results = _evaluate(run_dir / "checkpoints" / "last.ckpt", tmp_path, "split=val", "dataset.eval_batch_size=4")
    assert results["split"] == "val"
    assert results["overrides"] == ["dataset.eval_batch_size=4"]
    assert set(results["test_samples"]).isdisjoint(json.loads((run_dir / "results.json").read_text())["test_samples"])
    assert "[" in capsys.readouterr().out  # the summary shows CIs


def test_a_global_group_override_is_refused(run_dir, tmp_path):
    with pytest.raises(FERError, match="modality"):
        _evaluate(run_dir / "checkpoints" / "last.ckpt", tmp_path, "modality=visible")


def test_changed_manifest_is_reported(run_dir, tmp_path, capsys):
    copy = tmp_path / "copied_run"
    shutil.copytree(run_dir / ".hydra", copy / ".hydra")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["SyntheticDataModule"]["manifest_sha1"] = "0" * 40
    (copy / "checkpoints").mkdir()
    torch.save(ckpt, copy / "checkpoints" / "last.ckpt")
    # refused by default: the test split may now hold training samples
    with pytest.raises(FERError, match=r"changed since last.ckpt was written \(sha1 000000000000 -> [0-9a-f]{12}\)"):
        _evaluate(copy / "checkpoints" / "last.ckpt", tmp_path / "refused")
    assert not (tmp_path / "refused" / "results.json").exists()
    results = _evaluate(copy / "checkpoints" / "last.ckpt", tmp_path / "eval", "allow_manifest_change=true")
    assert results["manifest_changed"] is True and results["allow_manifest_change"] is True
    assert "changed since last.ckpt was written" in capsys.readouterr().err


def test_bad_checkpoints_are_one_line_errors(run_dir, tmp_path):
    with pytest.raises(FERError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FERError, match="not a readable checkpoint"):
        load_checkpoint(corrupt)
    lonely = tmp_path / "elsewhere" / "checkpoints" / "last.ckpt"
    lonely.parent.mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", lonely)
    with pytest.raises(FERError, match="no run config"):
        load_checkpoint(lonely)


@pytest.mark.slow
def test_cli_reports_a_missing_checkpoint_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fer_lightning.evaluate",
            f"ckpt_path={tmp_path / 'nope.ckpt'}",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: ckpt_path={tmp_path / 'nope.ckpt'}: no such checkpoint file"]


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("model.backbone.name=resnet34", "rebuilt from its own saved settings"),
        ("model.backbone.name=timm/does_not_exist", "rebuilt from its own saved settings"),
        ("model.fusion=foo", "rebuilt from its own saved settings"),
        ("model=resnet18", "rebuilt from its own saved settings"),
        ("augment=none", "does not augment"),
        ("budget.steps=10", "does not train"),
        ("trainer.max_epochs=3", "tests the whole split"),
        ("+trainer.limit_test_batches=1", "tests the whole split"),
        ("dataset.generator.n_subjects=12", "prepares nothing"),
        ("+dataset.download=false", "prepares nothing"),
    ],
)
def test_an_override_evaluation_cannot_apply_is_refused(run_dir, tmp_path, override, why):
    with pytest.raises(FERError, match=why) as exc:
        _evaluate(run_dir / "checkpoints" / "last.ckpt", tmp_path, override)
    assert str(exc.value).startswith(f"{override}: not applied at evaluation: ") and "\n" not in str(exc.value)
    assert not (tmp_path / "results.json").exists()


def _prepared_copy(data_dir: Path, target: Path, *overrides: str) -> Path:
    """A copy of the session's prepared synthetic data, prepared again with ``overrides`` (e.g. another split)."""
    from fer_lightning.runs import build_datamodule
    from tests.conftest import TINY, compose_cfg

    shutil.copytree(data_dir / "synthetic", target / "synthetic", ignore=shutil.ignore_patterns("cache"))
    build_datamodule(compose_cfg([*TINY, *overrides], target / "prep", target).dataset).prepare_data()
    return target / "synthetic"


def test_a_checkpoint_of_another_split_is_tested_on_its_own_and_the_prepared_data_is_not_touched(
    run_dir, run_results, data_dir, tmp_path, capsys
):
    shared = _prepared_copy(data_dir, tmp_path / "data", "dataset.split.seed=1")
    files = {f: (shared / f).read_bytes() for f in ("manifest.csv", "split.json")}
    assert json.loads(files["split.json"])["seed"] == 1  # the tiny run was trained on split seed 0
    capsys.readouterr()
    results = _evaluate(Path(run_results["best_checkpoint"]), tmp_path / "e", f"paths.data_dir={tmp_path / 'data'}")
    assert {f: (shared / f).read_bytes() for f in files} == files
    assert results["split_source"] == "recomputed" and results["manifest_changed"] is False
    assert results["manifest_sha1"] == run_results["manifest_sha1"]  # exactly the checkpoint's split
    assert results["test_samples"] == run_results["test_samples"]
    assert results["test"]["confusion_matrix"] == run_results["test"]["confusion_matrix"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "dataset.split.seed=1" in warnings[0] and "dataset.split.seed=0" in warnings[0]


def test_evaluate_prepares_nothing(run_dir, tmp_path):
    empty = tmp_path / "no_data"
    with pytest.raises(FERError, match="no prepared dataset; evaluation only reads data"):
        _evaluate(run_dir / "checkpoints" / "last.ckpt", tmp_path / "e", f"paths.data_dir={empty}")
    assert not empty.exists()


def test_evaluate_is_verbose_by_its_own_key_not_the_training_runs(tmp_path):
    from omegaconf import OmegaConf

    from fer_lightning.runs.config import evaluation_config

    trained_verbose = OmegaConf.create({"verbose": True, "seed": 0, "paths": {"output_dir": "run"}})
    run_cfg, _ = evaluation_config(trained_verbose, compose_app("eval", ["ckpt_path=a.ckpt"], tmp_path))
    assert run_cfg.verbose is False  # the evaluation's wandb logger (verbose: ${verbose}) stays silent
    older = OmegaConf.create({"seed": 0, "paths": {"output_dir": "run"}})  # saved before the key existed
    run_cfg, applied = evaluation_config(older, compose_app("eval", ["ckpt_path=a.ckpt", "verbose=true"], tmp_path))
    assert run_cfg.verbose is True and applied == []
