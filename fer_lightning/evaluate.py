"""``python -m fer_lightning.evaluate ckpt_path=<ckpt> [overrides]``: test a checkpoint with its run's own config.

The run's saved ``.hydra/config.yaml`` (beside ``checkpoints/``) says which dataset, modality, image size and
classes the checkpoint was trained with, so none of them need repeating. Overrides given on the command line
(e.g. ``dataset.split.fold=1``, ``paths.data_dir=...``) are applied on top of it; ``split=val`` tests the
validation split instead of the test split. Writes results.json, confusion_matrix.png and predictions.csv into
this command's own run dir.
"""

from __future__ import annotations

import csv
import io
import logging
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from fer_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fer_lightning.cli import quiet_libraries, report_errors
from fer_lightning.data.datamodules import ManifestDataModule
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_text
from fer_lightning.metrics import classification_report
from fer_lightning.plots import confusion_matrix_figure
from fer_lightning.runs import RESULTS, print_summary, read_results, write_results
from fer_lightning.train import build_datamodule, build_model

log = logging.getLogger(__name__)

RUN_CONFIG = Path(".hydra") / "config.yaml"
# Keys of evaluate's own config; every other override is applied to the run's saved config.
OWN_KEYS = ("ckpt_path", "split", "task_name", "hydra", "paths.output_dir", "paths.log_dir")
# Config groups that write into the global package (several keys at once): they would change what the
# checkpoint is, so they cannot be overridden at evaluation.
# Groups that would replace the run's settings wholesale (dataset= would reset its split, size and classes).
GLOBAL_GROUPS = ("dataset", "modality", "experiment", "debug", "hparams_search")
SPLITS = ("test", "val")


@dataclass
class RunCheckpoint:
    """A checkpoint file with the config of the run that wrote it."""

    path: Path
    checkpoint: dict
    run_dir: Path
    config: DictConfig

    @property
    def classes(self) -> list[str]:
        return list(self.checkpoint.get("hyper_parameters", {}).get("class_names") or [])

    @property
    def datamodule_state(self) -> dict | None:
        """What :meth:`ManifestDataModule.state_dict` saved (manifest sha1, classes, normalisation stats)."""
        for value in self.checkpoint.values():
            if isinstance(value, dict) and "stats" in value and "classes" in value:
                return value
        return None

    @property
    def modality(self) -> str:
        return str(self.config.modality)


def load_checkpoint(ckpt_path: str | Path | None) -> RunCheckpoint:
    """Reads a Lightning checkpoint and its run's ``.hydra/config.yaml``; every failure is one FERError line."""
    if ckpt_path in (None, "", "???"):
        raise FERError("ckpt_path is not set; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise FERError(f"ckpt_path={path}: no such checkpoint file")
    try:
        # Our own Lightning checkpoints hold plain Python objects beside tensors, hence weights_only=False.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise FERError(
            f"ckpt_path={path}: not a readable checkpoint ({reason}); train again or pick another file"
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise FERError(f"ckpt_path={path}: not a Lightning checkpoint (no state_dict); pick a file from checkpoints/")
    for run_dir in (path.parent.parent, path.parent):
        config_path = run_dir / RUN_CONFIG
        if config_path.is_file():
            break
    else:
        raise FERError(
            f"ckpt_path={path}: no run config ({path.parent.parent / RUN_CONFIG}); evaluate a checkpoint "
            "that sits in its run dir's checkpoints/ folder"
        )
    try:
        config = OmegaConf.load(config_path)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise FERError(f"{config_path}: unreadable run config ({type(exc).__name__}); restore it from the run") from exc
    return RunCheckpoint(path=path, checkpoint=checkpoint, run_dir=run_dir, config=config)


def build_model_from_run(run: RunCheckpoint, classes: list[str] | None = None) -> L.LightningModule:
    """The run's model class and settings with the checkpoint's weights, in eval mode."""
    model_cfg = run.config.model.copy()
    with open_dict(model_cfg):
        # The checkpoint holds every weight: no ImageNet download, no infrared-branch init file needed.
        model_cfg.backbone.weights = None
        if "infrared_init" in model_cfg:
            model_cfg.infrared_init = None
    model = build_model(model_cfg, classes or run.classes)
    try:
        model.load_state_dict(run.checkpoint["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise FERError(
            f"ckpt_path={run.path}: weights do not fit the run config's model ({first[:100]}); "
            f"was {run.run_dir / RUN_CONFIG} edited?"
        ) from exc
    return model.eval()


def _split_key(override) -> str:
    return override.key_or_group if override.package in (None, "") else f"{override.key_or_group}@{override.package}"


def apply_overrides(run_cfg: DictConfig, composed: DictConfig, overrides: list[str], choices: dict) -> list[str]:
    """Copies the overridden keys of evaluate's composed config onto the run's saved config.

    ``composed`` is evaluate's own config (the train defaults plus the command line), so key names were
    already validated by Hydra. Returns the overrides applied.
    """
    applied = []
    for ov in OverridesParser.create().parse_overrides(overrides):
        key = ov.key_or_group
        if key in OWN_KEYS or any(key.startswith(f"{k}.") for k in OWN_KEYS) or key.startswith("hydra"):
            continue
        if ov.is_sweep_override():
            raise FERError(f"{key}: evaluate takes one value per key, not a sweep")
        if key in GLOBAL_GROUPS:
            raise FERError(
                f"{key}={ov.value()}: evaluate uses the checkpoint's own {key}; override single keys "
                "instead (e.g. dataset.split.fold=1)"
            )
        if ov.is_delete():
            with open_dict(run_cfg):
                OmegaConf.update(run_cfg, key, None, force_add=True)
        elif key in choices:  # a config group such as dataset=folder: take the whole composed node
            node = key.replace("/", ".")
            with open_dict(run_cfg):
                OmegaConf.update(run_cfg, node, OmegaConf.select(composed, node), merge=False, force_add=True)
        else:
            with open_dict(run_cfg):
                OmegaConf.update(run_cfg, key, OmegaConf.select(composed, key), merge=False, force_add=True)
        applied.append(ov.input_line)
    return applied


def _previous_results(run_dir: Path) -> dict:
    path = run_dir / RESULTS
    try:
        return read_results(path) if path.is_file() else {}
    except ValueError:
        return {}


def _write_predictions(path: Path, rows: list[dict], probs: torch.Tensor, labels, index, classes: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["sample_id", "visible", "infrared", "label", "prediction", *(f"p_{c}" for c in classes)])
    for p, y, i in zip(probs.tolist(), labels.tolist(), index.tolist(), strict=True):
        r = rows[i]
        writer.writerow(
            [
                r["sample_id"],
                r.get("visible", ""),
                r.get("infrared", ""),
                classes[y],
                classes[max(range(len(p)), key=p.__getitem__)],
                *(f"{v:.6f}" for v in p),
            ]
        )
    atomic_write_text(path, buf.getvalue())


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Tests ``cfg.ckpt_path`` on ``cfg.split`` of its run's data; returns the results.json contents.

    Args:
        cfg: evaluate's composed config (``conf/eval.yaml``).
        overrides: the command-line overrides to apply to the run's config; None reads them from Hydra.
    """
    if cfg.get("split", "test") not in SPLITS:
        raise FERError(f"split={cfg.split}: use one of {', '.join(SPLITS)}")
    run = load_checkpoint(cfg.get("ckpt_path"))
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if overrides is None:
        overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    choices = dict(hydra_cfg.runtime.choices) if hydra_cfg is not None else {}
    run_cfg = run.config.copy()
    applied = apply_overrides(run_cfg, cfg, overrides, choices)
    output_dir = Path(cfg.paths.output_dir)
    with open_dict(run_cfg):
        run_cfg.paths.output_dir = str(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(run_cfg.seed), verbose=False)

    datamodule: ManifestDataModule = build_datamodule(run_cfg.dataset)
    datamodule.prepare_data()
    datamodule.setup("test")
    if run.classes and datamodule.classes != run.classes:
        raise FERError(
            f"{datamodule.manifest_path}: classes {datamodule.classes} differ from the checkpoint's "
            f"{run.classes}; evaluate on the dataset the model was trained for"
        )
    state = run.datamodule_state
    manifest_changed = None
    if state is not None:
        saved_sha1 = state.get("manifest_sha1")
        manifest_changed = bool(saved_sha1 and saved_sha1 != datamodule.manifest_sha1)
        if manifest_changed:
            print(
                f"warning: {datamodule.manifest_path} changed since {run.path.name} was written (sha1 "
                f"{saved_sha1[:12]} -> {datamodule.manifest_sha1[:12]}): splits or samples may differ from "
                "the run's",
                file=sys.stderr,
                flush=True,
            )
        # Normalise with the statistics the model was trained with, not ones recomputed from today's data.
        datamodule.load_state_dict({k: v for k, v in state.items() if k != "manifest_sha1"})
    model = build_model_from_run(run, datamodule.classes)

    split = cfg.get("split", "test")
    if split != "test":
        # Lightning's test loop reads test_dataloader(); point it at the split asked for (eval transforms).
        datamodule.test_dataloader = lambda: datamodule._loader(split, False, datamodule.eval_batch_size)
    with open_dict(run_cfg):
        # A debug or limited run must still be evaluated on its whole split.
        for key in ("fast_dev_run", "limit_test_batches", "max_steps", "limit_train_batches", "limit_val_batches"):
            run_cfg.trainer.pop(key, None)
    trainer: L.Trainer = hydra.utils.instantiate(run_cfg.trainer, callbacks=[], logger=False)
    trainer.test(model, datamodule=datamodule, verbose=False)

    outputs = model.test_outputs
    classes = datamodule.classes
    report = classification_report(outputs["labels"].numpy(), outputs["probs"].argmax(1).numpy(), classes)
    previous = _previous_results(run.run_dir)
    results = {
        "dataset": datamodule.name,
        "modality": datamodule.modality,
        "seed": int(run_cfg.seed),
        "classes": classes,
        "best_val_accuracy": previous.get("best_val_accuracy"),
        "best_checkpoint": str(run.path.resolve()),
        "epochs_trained": int(run.checkpoint.get("epoch", -1)) + 1,
        "train_seconds": previous.get("train_seconds", float("nan")),  # NaN: the run left no results.json
        "test": report,
        "split": split,
        "source": "evaluate",
        "experiment": previous.get("experiment"),
        "evaluated_run_dir": str(run.run_dir.resolve()),
        "overrides": applied,
        "run_dir": str(output_dir.resolve()),
        "manifest_sha1": datamodule.manifest_sha1,
        "manifest_changed": manifest_changed,
        "test_samples": [datamodule.rows[i]["sample_id"] for i in outputs["index"].tolist()],
    }
    path = write_results(output_dir, results)
    confusion_matrix_figure(
        report["confusion_matrix"],
        classes,
        output_dir / "confusion_matrix.png",
        title=f"{datamodule.name} {datamodule.modality} {split} (n={report['n']})",
    )
    _write_predictions(
        output_dir / "predictions.csv", datamodule.rows, outputs["probs"], outputs["labels"], outputs["index"], classes
    )
    print_summary(results, path)
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    evaluate(cfg)


if __name__ == "__main__":
    main()
