import csv
import warnings

import pytest
from omegaconf import OmegaConf

from fer_lightning.loggers import AppendingCSVLogger, finish_wandb, log_evaluation, results_summary, wandb_logger
from tests.conftest import TINY, compose_cfg
from tests.helpers.wandb_runs import offline_runs, read_run


def test_csv_metrics_survive_a_second_logger_in_the_same_run_dir(tmp_path):
    first = AppendingCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"val/accuracy": 0.5}, step=0)
    first.save()
    resumed = AppendingCSVLogger(save_dir=tmp_path, name="csv", version="")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.log_metrics({"val/accuracy": 0.7, "train/loss": 1.0}, step=1)
    # Lightning's "Previous log files in this directory will be deleted" would be false: they are kept
    assert not [w for w in caught if "deleted" in str(w.message)]
    resumed.save()
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["val/accuracy"] for r in rows] == ["0.5", "0.7"]
    assert rows[1]["train/loss"] == "1.0"


# ------------------------------------------------------------------------------------------- wandb


def _init(logger) -> dict:
    return logger._wandb_init


def test_group_and_tags_come_from_the_sweep_or_the_recipe(tmp_path):
    single = {"mode": "RUN", "runtime": {"output_dir": str(tmp_path / "run"), "choices": {"experiment": None}}}
    lg = wandb_logger(save_dir=str(tmp_path), dataset="viri", modality="fusion", job_type="fusion", run_hydra=single)
    assert _init(lg)["group"] == "default-viri-fusion"
    assert _init(lg)["tags"] == ["viri", "fusion"] and _init(lg)["job_type"] == "fusion"
    recipe = {"mode": "RUN", "runtime": {"output_dir": str(tmp_path), "choices": {"experiment": "paper_viri_fusion"}}}
    lg = wandb_logger(save_dir=str(tmp_path), tags=["mine"], dataset="viri", modality="fusion", run_hydra=recipe)
    assert _init(lg)["group"] == "paper_viri_fusion-viri-fusion"
    assert _init(lg)["tags"] == ["mine", "viri", "fusion", "paper_viri_fusion"]
    sweep = {"mode": "MULTIRUN", "runtime": {"output_dir": str(tmp_path / "2026-01-01_seeds" / "3"), "choices": {}}}
    lg = wandb_logger(save_dir=str(tmp_path), dataset="viri", modality="visible", run_hydra=OmegaConf.create(sweep))
    assert _init(lg)["group"] == "2026-01-01_seeds"
    lg = wandb_logger(save_dir=str(tmp_path), group="mine", dataset="viri", modality="visible", run_hydra=sweep)
    assert _init(lg)["group"] == "mine"


def test_config_composes_group_job_type_and_top_level_seed_and_fold(tmp_path):
    cfg = compose_cfg([*TINY, "logger=wandb", "modality=infrared", "seed=3", "dataset.split.fold=2"], tmp_path)
    node = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    assert node["job_type"] == "infrared" and node["group"] is None
    assert node["config"] == {"seed": 3, "fold": 2}
    cfg = compose_cfg(["logger=wandb", "logger.wandb.group=ablation-1"], tmp_path)
    assert cfg.logger.wandb.group == "ablation-1"


def test_results_summary_uses_results_json_names():
    results = {
        "best_val_accuracy": 0.9,
        "train_seconds": 12.5,
        "epochs_trained": 3,
        "test": {"n": 90, "accuracy": 0.8, "accuracy_ci95": [0.7, 0.88], "confusion_matrix": [[1]], "per_class": {}},
    }
    assert results_summary(results) == {
        "best_val_accuracy": 0.9,
        "train_seconds": 12.5,
        "epochs_trained": 3,
        "test/n": 90,
        "test/accuracy": 0.8,
        "test/accuracy_ci95_lo": 0.7,
        "test/accuracy_ci95_hi": 0.88,
    }


def test_evaluation_sits_beside_its_run(tmp_path, wandb_offline):
    run_cfg = compose_cfg([*TINY, "logger=wandb", "modality=fusion"], tmp_path / "eval")
    evaluated = tmp_path / "2026-01-01_sweep" / "1"
    (evaluated / ".hydra").mkdir(parents=True)
    hydra = {"hydra": {"mode": "MULTIRUN", "runtime": {"choices": {"experiment": "ours_viri_fusion"}}}}
    (evaluated / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml(hydra))
    results = {"test": {"n": 4, "accuracy": 0.5, "accuracy_ci95": [0.0, 1.0]}, "best_val_accuracy": 0.75}
    log_evaluation(run_cfg, results, tmp_path / "eval", evaluated)
    (path,) = offline_runs(tmp_path / "eval")
    logged = read_run(path)
    assert logged["job_type"] == "evaluate" and logged["project"] == "fer-lightning"
    assert logged["group"] == "2026-01-01_sweep"
    assert {"synthetic", "fusion", "ours_viri_fusion"} <= set(logged["tags"])
    assert logged["summary"]["test/accuracy"] == 0.5 and logged["summary"]["test/n"] == 4
    assert logged["config"]["evaluated_run_dir"] == str(evaluated)
    log_evaluation(compose_cfg(["logger=none"], tmp_path / "quiet"), results, tmp_path / "quiet", evaluated)
    assert not offline_runs(tmp_path / "quiet")


@pytest.mark.parametrize("verbose", [False, True])
def test_wandb_prints_its_lines_only_with_verbose(verbose, tmp_path, wandb_offline, monkeypatch, capfd):
    import wandb

    monkeypatch.delenv("WANDB_SILENT")
    wandb.teardown()  # wandb keeps its settings (silent or not) per process from the first run of an earlier test
    cfg = compose_cfg(["logger=wandb", f"verbose={str(verbose).lower()}"], tmp_path)
    node = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    assert node["verbose"] is verbose
    logger = wandb_logger(save_dir=str(tmp_path), project="fer-lightning", verbose=node["verbose"])
    logger.log_metrics({"val/accuracy": 0.5}, step=0)
    finish_wandb()
    printed = capfd.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if line.startswith("wandb:")]
    # never the false "The anonymous setting has no effect" (WandbLogger always passed anonymous=)
    assert not [line for line in lines if "anonymous" in line]
    if verbose:
        assert any("Run data is saved locally" in line for line in lines)
    else:
        assert lines == []
