"""``python -m fer_lightning.train [overrides]``: fit, test the best-validation checkpoint, write results.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fer_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fer_lightning.budget import apply_budget
from fer_lightning.cli import quiet_libraries, report_errors
from fer_lightning.data.datamodules import ManifestDataModule
from fer_lightning.errors import FERError
from fer_lightning.loggers import finish_wandb
from fer_lightning.metrics import classification_report
from fer_lightning.plots import confusion_matrix_figure
from fer_lightning.runs import print_summary, write_results

log = logging.getLogger(__name__)


def build_datamodule(dataset_cfg: DictConfig) -> ManifestDataModule:
    return instantiate(OmegaConf.to_container(dataset_cfg, resolve=True), _convert_="all")


def build_model(model_cfg: DictConfig, classes: list[str]) -> L.LightningModule:
    return instantiate(model_cfg, num_classes=len(classes), class_names=classes, _convert_="all")


def _instantiate_group(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def _resolve_ckpt(ckpt_path: str | None, output_dir: Path) -> str | None:
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FERError(f"ckpt_path=last: {path} does not exist; resume with hydra.run.dir=<the run's dir>")
        return str(path)
    if not Path(ckpt_path).is_file():
        raise FERError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def _experiment_name() -> str | None:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("experiment")
    return None


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Fits and tests one model as ``cfg`` describes.

    Returns:
        ``(metrics, objects)``: the logged metrics plus the contents of results.json under ``"results"``,
        and the datamodule, model and trainer.
    """
    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")

    datamodule = build_datamodule(cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("fit")
    budget = apply_budget(cfg, datamodule)  # epochs, validation checks and LR horizon from the train-set size
    model = build_model(cfg.model, datamodule.classes)
    loggers = _instantiate_group(cfg.get("logger"))
    callbacks = [*_instantiate_group(cfg.get("callbacks")), *budget.callbacks()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if loggers:
        hparams = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
        hparams = OmegaConf.to_container(OmegaConf.merge(hparams, {"paths": cfg.paths}), resolve=True)
        for lg in loggers:
            lg.log_hyperparams(hparams)

    trainer.fit(model, datamodule=datamodule, ckpt_path=_resolve_ckpt(cfg.get("ckpt_path"), output_dir))
    train_seconds = time.time() - start
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}

    outputs = model.test_outputs
    preds = outputs["probs"].argmax(1).numpy()
    report = classification_report(outputs["labels"].numpy(), preds, datamodule.classes)
    best_score = ckpt_cb.best_model_score if ckpt_cb is not None else None
    results = {
        "dataset": datamodule.name,
        "modality": datamodule.modality,
        "seed": int(cfg.seed),
        "classes": datamodule.classes,
        "best_val_accuracy": float(best_score) if best_score is not None else None,
        "best_checkpoint": best,
        "epochs_trained": int(trainer.current_epoch),
        "budget": budget.record(),
        "train_seconds": round(train_seconds, 2),
        "test": report,
        "experiment": _experiment_name(),
        "run_dir": str(output_dir.resolve()),
        "manifest_sha1": datamodule.manifest_sha1,
        "test_samples": [datamodule.rows[i]["sample_id"] for i in outputs["index"].tolist()],
    }
    path = write_results(output_dir, results)
    confusion_matrix_figure(
        report["confusion_matrix"],
        datamodule.classes,
        output_dir / "confusion_matrix.png",
        title=f"{datamodule.name} {datamodule.modality} test (n={report['n']})",
    )
    print_summary(results, path)
    metrics = {**fit_metrics, **test_metrics, "results": results}
    return metrics, {"datamodule": datamodule, "model": model, "trainer": trainer, "predictions": preds}


def run(cfg: DictConfig) -> float | None:
    """Trains, always closing wandb; returns the best validation accuracy for sweepers."""
    quiet_libraries()
    try:
        metrics, _ = train(cfg)
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finish_wandb()
    value = metrics["results"]["best_val_accuracy"]
    return None if value is None or np.isnan(value) else value


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # In a multirun a failing job must fail alone: an exception lets Hydra record it and run the other jobs
    # (fer_lightning.sweep.SweepSummary reports it); report_errors' sys.exit(2) would end the whole sweep.
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return run(cfg)
    return report_errors(run)(cfg)


if __name__ == "__main__":
    # Launchers that pickle the task (joblib, submitit) pickle functions of __main__ by value, with every global
    # they reach, and some of those cannot be pickled; the importable module's run() goes by reference.
    from fer_lightning import train as _importable

    run = _importable.run
    main()
