"""End-to-end runs of ``train(cfg)`` on tiny synthetic data, in-process on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fer_lightning.runs import train_and_test
from fer_lightning.train import run as fer_run
from tests.conftest import CONF, REPO, TINY, compose_cfg

RESULT_FIELDS = {
    "dataset",
    "modality",
    "seed",
    "classes",
    "best_val_accuracy",
    "best_checkpoint",
    "epochs_trained",
    "train_seconds",
    "test",
}
TEST_FIELDS = {
    "n",
    "accuracy",
    "accuracy_ci95",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_macro_ci95",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "confusion_matrix",
    "per_class",
}


def experiment_files() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("dataset", ["synthetic", "viri", "nvie", "folder"])
@pytest.mark.parametrize("modality", ["visible", "infrared", "fusion"])
def test_every_dataset_and_modality_composes(dataset, modality, tmp_path):
    cfg = compose_cfg([f"dataset={dataset}", f"modality={modality}"], tmp_path)
    assert cfg.modality == modality and cfg.dataset.modality == modality and cfg.dataset.name == dataset
    expected = "FusionModule" if modality == "fusion" else "SingleModalityModule"
    assert cfg.model._target_.endswith(expected)
    assert cfg.model.backbone.weights == (None if dataset == "synthetic" else "imagenet")


@pytest.mark.parametrize("experiment", experiment_files())
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    assert cfg.model._target_ and cfg.dataset._target_ and cfg.trainer.max_epochs > 0


@pytest.mark.parametrize("modality", ["visible", "infrared", "fusion"])
def test_debug_fast_fit_and_test(modality, tmp_path, data_dir):
    cfg = compose_cfg([*TINY, f"modality={modality}", "debug=fast"], tmp_path / "run", data_dir)
    returned, run = train_and_test(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results) >= RESULT_FIELDS and set(results["test"]) >= TEST_FIELDS
    assert results["modality"] == modality
    assert results["test"]["n"] == len(run.datamodule.test_dataloader().dataset)
    assert (tmp_path / "run" / "confusion_matrix.png").stat().st_size > 0
    assert returned == results
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # a smoke run writes no checkpoint: nothing to resume


@pytest.mark.slow
def test_short_run_learns_and_writes_every_output(tmp_path, data_dir):
    """Easy synthetic faces: a few epochs from scratch must end far above chance (0.2), with checkpoints and CSV."""
    run = tmp_path / "run"
    cfg = compose_cfg(
        [
            *TINY,
            "dataset.generator.difficulty=easy",
            "dataset.generator.n_subjects=10",
            "dataset.generator.samples_per_class=4",
            "dataset.image_size=40",
            "modality=visible",
            "trainer.max_epochs=8",
            "logger=csv",
            "model.head={hidden:256,dropout_in:0.0,activation:null,batchnorm:false,dropout_hidden:0.0,dropout_out:0.0}",
        ],
        run,
        data_dir,
    )
    _, fitted = train_and_test(cfg)
    results = json.loads((run / "results.json").read_text())
    test = results["test"]
    assert test["accuracy"] >= 0.6, test
    assert test["accuracy_ci95"][0] <= test["accuracy"] <= test["accuracy_ci95"][1]
    assert sum(map(sum, test["confusion_matrix"])) == test["n"] == len(fitted.datamodule.test_dataloader().dataset)
    assert results["epochs_trained"] == 8
    best = Path(results["best_checkpoint"])
    assert best.parent == run / "checkpoints" and best.is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert results["best_val_accuracy"] == pytest.approx(float(fitted.trainer.checkpoint_callback.best_model_score))
    assert (run / "csv" / "metrics.csv").is_file()
    assert set(results["classes"]) == {"Angry", "Happy", "Neutral", "Sad", "Surprise"}


def test_wandb_runs_offline_and_writes_its_run_dir(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-default"))
    run = tmp_path / "run"
    cfg = compose_cfg([*TINY, "modality=infrared", "debug=fast", "logger=wandb"], run, data_dir)
    fer_run(cfg)
    import wandb

    assert wandb.run is None  # finished by run(), the wrapper around train()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, list(run.rglob("*"))
    assert any(offline[0].glob("*.wandb"))


def test_generated_dataset_is_reused_not_regenerated(tmp_path, data_dir):
    cfg = compose_cfg([*TINY, "modality=visible", "debug=fast"], tmp_path / "a", data_dir)
    train_and_test(cfg)
    manifest = data_dir / "synthetic" / "manifest.csv"
    before = manifest.stat().st_mtime_ns
    train_and_test(compose_cfg([*TINY, "modality=visible", "debug=fast"], tmp_path / "b", data_dir))
    assert manifest.stat().st_mtime_ns == before
    header = manifest.read_text().splitlines()[0].split(",")
    assert header[:6] == ["sample_id", "label", "visible", "infrared", "subject", "split"]
    assert (data_dir / "synthetic" / "contact_sheet.png").is_file()


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fer_lightning.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    proc = run_cli(
        ["dataset=folder", "debug=fast", f"paths.data_dir={tmp_path}/data", f"paths.log_dir={tmp_path}/logs"],
        REPO,
    )
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("error: ") and "dataset.root" in lines[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_run_dirs_are_unique_and_end_with_results_path(tmp_path):
    args = [
        *TINY,
        "debug=fast",
        "modality=visible",
        f"paths.data_dir={tmp_path}/data",
        f"paths.log_dir={tmp_path}/logs",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fer_lightning.train", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = sorted((tmp_path / "logs").rglob("results.json"))
    assert len(results) == 2 and results[0].parent != results[1].parent
    assert any("results:" in out for out, _ in outs)


def test_defaults_follow_the_contract():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    assert choices.dataset == "synthetic" and cfg.modality == "fusion" and cfg.seed == 0
    assert choices.logger == "wandb" and set(cfg.logger) == {"wandb", "csv"}
    assert cfg.paths.data_dir == "./data" and cfg.ckpt_path is None
    assert cfg.dataset.batch_size == 64 and cfg.dataset.split.ratios == [0.6, 0.15, 0.25]
    defaults = OmegaConf.load(CONF / "train.yaml").defaults
    # ("override hydra/help" chooses Hydra's own help page; it composes nothing of the run)
    order = [d if isinstance(d, str) else next(iter(d)) for d in defaults]
    order = [name for name in order if not name.startswith("override ")]
    assert order.index("experiment") > order.index("trainer") and order[-1] == "debug"
    assert order.index("experiment") > order.index("trainer") and order[-1] in ("debug", "hparams_search")


def test_bad_generator_setting_is_a_one_line_error_and_leaves_no_partial_dataset(tmp_path):
    from fer_lightning.errors import FERError

    cfg = compose_cfg([*TINY, "debug=fast", "+dataset.generator.difficulty.glare=2"], tmp_path / "run", tmp_path)
    with pytest.raises(FERError, match=r"dataset\.generator: unknown difficulty knob"):
        train_and_test(cfg)
    assert not (tmp_path / "synthetic").exists() and not list(tmp_path.glob(".synthetic*"))
