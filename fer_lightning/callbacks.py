"""Callbacks that make a run readable: learning curves in the run dir, test results in wandb."""

from __future__ import annotations

import datetime as dt
import logging
import math
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

from fer_lightning.plots import curves_figure

log = logging.getLogger(__name__)

CURVE_METRICS = ("loss", "accuracy")


class ModelSummary(LightningModelSummary):
    """Lightning's table of layers and parameter counts (shown with ``trainer.enable_model_summary``, which
    ``verbose=true`` sets), without its FLOPs column and total where they are 0: Lightning counts FLOPs only for
    a model with an ``example_input_array``, which these models do not define."""

    @staticmethod
    def summarize(
        summary_data,
        total_parameters,
        trainable_parameters,
        model_size,
        total_training_modes,
        total_flops,
        **summarize_kwargs,
    ) -> None:
        if not total_flops:
            summary_data = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops"))
        log.info("model summary\n%s", table)


class RunFigures(L.Callback):
    """Writes ``curves.png`` (train/val loss and accuracy per epoch) into ``output_dir`` at the end of fitting,
    from the metrics the module logs, so no logger is needed. With a :class:`WandbLogger` attached, the end of
    testing also logs the confusion matrix, the per-class table and up to ``max_examples`` misclassified test
    samples (offline runs keep them in the local wandb folder).

    The history is part of the checkpoint, so a resumed run draws its curves from epoch 0.
    """

    def __init__(self, output_dir: str, max_examples: int = 8):
        self.output_dir = Path(output_dir)
        self.max_examples = int(max_examples)
        self.history: dict[int, dict[str, float]] = {}

    def _record(self, trainer: L.Trainer, stage: str) -> None:
        row = self.history.setdefault(int(trainer.current_epoch), {"epoch": int(trainer.current_epoch)})
        for metric in CURVE_METRICS:
            value = trainer.callback_metrics.get(f"{stage}/{metric}")
            if value is not None and not math.isnan(float(value)):
                row[f"{stage}/{metric}"] = float(value)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "train")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not at on_validation_epoch_end: Lightning reduces the epoch's metrics between the two hooks.
        if not trainer.sanity_checking:
            self._record(trainer, "val")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.history:
            history = [self.history[e] for e in sorted(self.history)]
            curves_figure(history, self.output_dir / "curves.png", title=f"{len(history)} epoch(s)")

    def state_dict(self) -> dict:
        return {"history": {str(k): v for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        outputs = getattr(pl_module, "test_outputs", None)
        if not loggers or not outputs or not trainer.is_global_zero:
            return
        import wandb

        from fer_lightning.metrics import classification_report

        classes = list(pl_module.class_names)
        labels = outputs["labels"].numpy()
        probs = outputs["probs"].numpy()
        preds = probs.argmax(1)
        report = classification_report(labels, preds, classes)
        per_class = wandb.Table(columns=["class", "precision", "recall", "f1", "support"])
        for name, m in report["per_class"].items():
            per_class.add_data(name, m["precision"], m["recall"], m["f1"], m["support"])
        payload = {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=labels.tolist(), preds=preds.tolist(), class_names=classes, title="test confusion matrix"
            ),
            "test/per_class": per_class,
        }
        examples = self._misclassified(trainer, outputs["index"].numpy(), labels, probs, classes)
        if examples:
            payload["test/misclassified"] = [wandb.Image(img, caption=cap) for img, cap in examples]
        for lg in loggers:
            lg.experiment.log(payload)

    def _misclassified(self, trainer, index, labels, probs, classes) -> list[tuple[np.ndarray, str]]:
        """Up to ``max_examples`` wrong test predictions, most confident first: (image, caption)."""
        dm = trainer.datamodule
        loader = dm.test_dataloader() if dm is not None else None
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "images") or not hasattr(dataset, "indices"):
            return []
        position = {int(r): p for p, r in enumerate(np.asarray(dataset.indices))}
        preds = probs.argmax(1)
        wrong = np.flatnonzero(preds != labels)
        wrong = wrong[np.argsort(-probs[wrong, preds[wrong]])][: self.max_examples]
        out = []
        for k in wrong:
            p = position.get(int(index[k]))
            if p is None:
                continue
            # visible | infrared side by side for a fusion model
            image = np.concatenate([np.asarray(dataset.images[m][p]) for m in dataset.images], axis=1)
            out.append(
                (image, f"true {classes[labels[k]]}, predicted {classes[preds[k]]} (p={probs[k, preds[k]]:.2f})")
            )
        return out


def _clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(max(0.0, seconds))))


class ProgressLog(L.Callback):
    """One plain line per validation check, so a run's progress can be read where no progress bar draws:

    ``epoch 3/12  step 120/480  train/loss 0.8121  val/loss 0.7000  val/accuracy 0.7333  elapsed 0:01:12  eta 0:03:40``

    The line is appended to ``<output_dir>/train.log`` always (Hydra's log of the run), and printed to stdout when
    stdout is not a terminal (a cluster job's log file), where the Rich bar is left out. Rank 0 only.
    """

    METRICS = ("train/loss", "val/loss", "val/accuracy")

    def __init__(self, output_dir: str, log_name: str = "train.log", stdout: bool | None = None):
        self.path = Path(output_dir) / log_name
        self.stdout = (not sys.stdout.isatty()) if stdout is None else bool(stdout)
        self._validated = False
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._step0 = time.monotonic(), trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        validated, self._validated = self._validated, False
        if not validated or not trainer.is_global_zero:
            return
        step = trainer.global_step
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        elapsed = time.monotonic() - self._t0
        done = step - self._step0
        eta = elapsed / done * max(0, total - step) if done > 0 else float("nan")
        values = {k: trainer.callback_metrics.get(k) for k in self.METRICS}
        shown = "  ".join(f"{k} {float(v):.4f}" for k, v in values.items() if v is not None)
        line = (
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  step {step}/{int(total)}  {shown}  "
            f"elapsed {_clock(elapsed)}  eta {_clock(eta) if math.isfinite(eta) else '?'}"
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.stdout:
            print(line, flush=True)
