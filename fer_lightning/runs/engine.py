"""A run as an object: built from a config (to train) or from a checkpoint (to evaluate), tested and reported
in one place, so ``train`` and ``evaluate`` write the same results.json and predictions.csv.

Every checkpoint Lightning reads here goes through :mod:`fer_lightning.runs.run_checkpoint` first and is then
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from fer_lightning import calibration
from fer_lightning.budget import Budget, apply_budget
from fer_lightning.callbacks.checkpoint import AtomicModelCheckpoint
from fer_lightning.data.datamodule import ManifestDataModule
from fer_lightning.data.near_duplicates import shared_share
from fer_lightning.data.split_view import SplitView
from fer_lightning.errors import FERError
from fer_lightning.loggers import log_evaluation, log_results
from fer_lightning.runs import calibrate
from fer_lightning.runs.batch_corruption import BatchCorruption, CorruptionSpec
from fer_lightning.runs.config import check_run_config, experiment_name, task_overrides
from fer_lightning.runs.data_checks import check_classes, check_evaluated_manifest, warn_split_difference
from fer_lightning.runs.distributed import end_process_group, kept_threads, rank_failure, wait_for_ranks
from fer_lightning.runs.instantiate import (
    build_datamodule,
    build_group,
    build_model,
    build_trainer,
    eval_trainer,
    model_from_checkpoint,
    world_size,
)
from fer_lightning.runs.results import TestOutcome, condition, previous_results, print_results, write_test_records
from fer_lightning.runs.resume import resolve_ckpt_path
from fer_lightning.runs.run_checkpoint import RunCheckpoint

log = logging.getLogger(__name__)

SPLITS = ("test", "val")


@dataclass
class FitOutcome:
    test_checkpoint: str | None  # "best" or "last" (callbacks.model_checkpoint.test_checkpoint)
    best_checkpoint: str | None
    best_val_accuracy: float | None
    epochs_trained: int
    train_seconds: float


class Run:
    """One model with its data: what ``train`` fits and ``evaluate`` re-tests.

    Build it with :meth:`for_training` (from a composed train config) or :meth:`from_checkpoint`.
    """

    def __init__(self, cfg: DictConfig, datamodule: ManifestDataModule, model: L.LightningModule):
        self.cfg = cfg
        self.datamodule = datamodule
        self.model = model
        self.output_dir = Path(cfg.paths.output_dir)
        self.trainer: L.Trainer | None = None
        self.loggers: list = []
        self.budget: Budget | None = None

    @classmethod
    def for_training(cls, cfg: DictConfig) -> Run:
        check_run_config(cfg)
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")
        datamodule = build_datamodule(cfg.dataset)
        datamodule.prepare_data()
        datamodule.setup("fit")
        # epochs, validation checks and the LR horizon from the train-set size, written into cfg before the
        # model and trainer are built
        budget = apply_budget(cfg, datamodule, world_size(cfg.trainer), task_overrides())
        run = cls(cfg, datamodule, build_model(cfg.model, datamodule.classes))
        run.budget = budget
        return run

    @classmethod
    def from_checkpoint(cls, run: RunCheckpoint, run_cfg: DictConfig, allow_manifest_change: bool = False) -> Run:
        """The checkpoint's model on its run's data (``run_cfg``: the run's config with any overrides applied).

        The prepared dataset is only read: a split other than the prepared one (another ``dataset.split.seed``)
        is drawn in memory and said in one warning. Normalisation uses the statistics stored in the
        checkpoint, not ones recomputed from today's data. A manifest that changed since training (splits or
        samples may differ) is refused unless allowed.
        """
        Path(run_cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        L.seed_everything(int(run_cfg.seed), verbose=False)
        datamodule = build_datamodule(run_cfg.dataset, read_only=True)
        datamodule.prepare_data()
        datamodule.setup("test")
        check_classes(datamodule, run)
        warn_split_difference(datamodule)
        self = cls(run_cfg, datamodule, model_from_checkpoint(run))
        self.manifest_changed = check_evaluated_manifest(datamodule, run, allow_manifest_change)
        datamodule.load_state_dict(run.datamodule_state or {})
        return self

    # -- fit ---------------------------------------------------------------------------------------------

    def fit(self) -> FitOutcome:
        cfg = self.cfg
        start = time.time()
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), self.output_dir, self.datamodule)
        self.loggers = build_group(cfg.get("logger"))
        callbacks = [*build_group(cfg.get("callbacks")), *(self.budget.callbacks() if self.budget else [])]
        self.trainer = build_trainer(cfg.trainer, callbacks, self.loggers)
        if self.loggers:
            hparams = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
            hparams = OmegaConf.to_container(OmegaConf.merge(hparams, {"paths": cfg.paths}), resolve=True)
            for lg in self.loggers:
                lg.log_hyperparams(hparams)
        try:
            with kept_threads():
                self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, weights_only=True)
        except FERError:
            raise
        except BaseException as exc:
            failure = rank_failure(self.trainer, wait=30.0)  # another rank failed first: this one lost its peers
            if failure is not None:
                raise failure from exc
            raise
        end_process_group(self.trainer)
        if "val/accuracy" not in self.trainer.callback_metrics:
            t = cfg.trainer
            raise FERError(
                f"the run never validated (trainer.max_epochs={t.get('max_epochs')}, check_val_every_n_epoch="
                f"{t.get('check_val_every_n_epoch')}, limit_val_batches={t.get('limit_val_batches', 1.0)}), so there "
                "is no result to report: let it validate at least once (trainer.limit_val_batches > 0, "
                "trainer.check_val_every_n_epoch <= trainer.max_epochs)"
            )
        failure = wait_for_ranks(self.trainer)
        if failure is not None:
            raise failure
        ckpt_cb = self.trainer.checkpoint_callback
        best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
        score = ckpt_cb.best_model_score if ckpt_cb is not None else None
        selected = "best" if best else None
        if getattr(ckpt_cb, "test_checkpoint", "best") == "last" and ckpt_cb.last_model_path:
            # the final weights, and the accuracy of the last validation check (in step mode: the last epoch)
            best, score = ckpt_cb.last_model_path, self.trainer.callback_metrics["val/accuracy"]
            selected = "last"
        return FitOutcome(
            test_checkpoint=selected,
            best_checkpoint=best,
            best_val_accuracy=float(score) if score is not None else None,
            epochs_trained=int(self.trainer.current_epoch),
            train_seconds=round(time.time() - start, 2),
        )

    # -- test --------------------------------------------------------------------------------------------

    def test(
        self, split: str = "test", ckpt_path: str | None = None, corruption: CorruptionSpec | None = None
    ) -> TestOutcome:
        """Predictions on a whole split (a debug run's limits do not apply), optionally from a checkpoint, with
        one modality corrupted or missing."""
        if split not in SPLITS:
            raise FERError(f"split={split}: use one of {', '.join(SPLITS)}")
        if corruption is not None and corruption.missing and not getattr(self.model, "supports_missing", False):
            raise FERError(
                f"missing={corruption.missing}: this {self.datamodule.modality} model cannot predict without it; "
                "use a late or gated fusion model (model.fusion=late|gated)"
            )
        unread = [m for m in ("visible", "infrared") if corruption and getattr(corruption, m)]
        unread = [m for m in unread if m not in self.datamodule.modalities]
        if unread:
            raise FERError(f"corrupt.{unread[0]}: this {self.datamodule.modality} model reads no {unread[0]} image")
        trainer = self._test_trainer()
        hook = BatchCorruption(corruption) if corruption and corruption.active else None
        data = SplitView(self.datamodule, split, hook)
        trainer.test(self.model, datamodule=data, ckpt_path=ckpt_path, verbose=False, weights_only=True)
        return TestOutcome.from_module(self.model.test_outputs, self.datamodule.rows, self.datamodule.classes)

    def _test_trainer(self) -> L.Trainer:
        """The fit's trainer where it ran on one device; else one device (rank 0's) with the run's loggers and
        callbacks: every test sample scored once, as ``evaluate`` scores it (no sampler padding, no split)."""
        if self.trainer is None:
            return eval_trainer(self.cfg.trainer, str(self.output_dir))
        if self.trainer.world_size == 1:
            return self.trainer
        root = self.trainer.strategy.root_device
        devices = [root.index] if root.type == "cuda" and root.index is not None else 1
        callbacks = build_group(self.cfg.get("callbacks"))
        return eval_trainer(self.cfg.trainer, str(self.output_dir), callbacks, self.loggers, devices)

    def header(self) -> dict:
        """The results.json keys that describe the run (the ``test`` object is added by the report)."""
        dm = self.datamodule
        return {
            "dataset": dm.name,
            "modality": dm.modality,
            "seed": int(self.cfg.seed),
            "classes": dm.classes,
            "experiment": experiment_name(),
            "manifest_sha1": dm.manifest_sha1,
            "faces": dm.face_table.record() if dm.face_table is not None else None,
        }

    def report(self, outcome: TestOutcome, fields: dict, split: str = "test") -> dict:
        """Writes results.json, predictions.csv and confusion_matrix.png; prints the summary."""
        dm = self.datamodule
        title = f"{dm.name} {dm.modality} {split}{condition(fields.get('corruption'))}"
        fields = {**fields, "near_duplicate_test_share": shared_share(dm.rows, outcome.sample_ids, split)}
        results, path = write_test_records(
            self.output_dir, outcome, {**self.header(), **fields}, title=title, conditions=_conditions(dm.root)
        )
        print_results(results, path)
        return results


def _conditions(root: Path) -> dict[str, dict] | None:
    """``sample_id -> row`` of the dataset's conditions.csv (what the synthetic generator drew), if it has one."""
    path = root / "conditions.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return {r["sample_id"]: r for r in csv.DictReader(f)}


def train_and_test(cfg: DictConfig) -> tuple[dict | None, Run]:
    """Fits ``cfg``, tests its best-validation checkpoint and reports; returns results.json (None on a rank other
    than 0) and the run."""
    run = Run.for_training(cfg)
    fit = run.fit()
    if not run.trainer.is_global_zero:  # rank 0 alone tests and writes every file
        return None, run
    outcome = run.test(ckpt_path=fit.best_checkpoint)
    results = run.report(
        outcome,
        {
            "best_val_accuracy": fit.best_val_accuracy,
            "checkpoint": fit.best_checkpoint,
            "best_checkpoint": fit.best_checkpoint,
            "test_checkpoint": fit.test_checkpoint,
            "epochs_trained": fit.epochs_trained,
            "train_seconds": fit.train_seconds,
            "source": "train",
            "overrides": task_overrides(),
            "budget": run.budget.record() if run.budget else None,
        },
    )
    log_results(run.loggers, results, run.output_dir)
    ckpt_cb = run.trainer.checkpoint_callback
    if isinstance(ckpt_cb, AtomicModelCheckpoint):
        ckpt_cb.keep_tested_only(run.trainer, fit.best_checkpoint)
    return results, run


def evaluate_checkpoint(cfg: DictConfig, run_cfg: DictConfig, run: RunCheckpoint, applied: list[str]) -> dict:
    """Tests ``run``'s checkpoint on ``cfg.split`` with ``run_cfg`` (its config plus the overrides applied)."""
    allow = bool(cfg.get("allow_manifest_change", False))
    corruption = CorruptionSpec.from_config(cfg)
    method = calibrate.calibrate_method(cfg)
    ev = Run.from_checkpoint(run, run_cfg, allow_manifest_change=allow)
    split = str(cfg.get("split", "test"))
    fit = calibrate.fit_on_val(ev) if method else None
    outcome = ev.test(split, corruption=corruption)
    calibrated = {}
    if fit is not None:
        raw, outcome = outcome, calibrate.scaled(outcome, fit.temperature)
        record = {**fit.record(), "tested_split": split, **calibrate.tested_split_record(raw, outcome)}
        calibrated = {"temperature": fit.temperature, "calibration": record}
    previous = previous_results(run.run_dir)
    results = ev.report(
        outcome,
        {
            "best_val_accuracy": previous.get("best_val_accuracy"),
            "checkpoint": str(run.path.resolve()),
            "best_checkpoint": str(run.path.resolve()),
            "epochs_trained": int(run.checkpoint.get("epoch", -1)) + 1,
            "train_seconds": previous.get("train_seconds", float("nan")),  # NaN: the run left no results.json
            "split": split,
            "source": "evaluate",
            "experiment": previous.get("experiment"),
            "budget": previous.get("budget"),
            "evaluated_run_dir": str(run.run_dir.resolve()),
            "overrides": applied,
            "manifest_changed": ev.manifest_changed,
            "split_source": ev.datamodule.split_source,
            "allow_manifest_change": allow,
            "corruption": corruption.record(),
            **calibrated,
        },
        split=split,
    )
    if fit is not None:  # only once the evaluation has succeeded
        calibration.store(run.path, {**fit.record(), "evaluate_run_dir": str(ev.output_dir.resolve())})
    log_evaluation(run_cfg, results, ev.output_dir, run.run_dir)
    return results
