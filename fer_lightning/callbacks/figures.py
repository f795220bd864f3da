"""Learning curves in the run dir, test results in wandb."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger

from fer_lightning.plots import curves_figure

CURVE_METRICS = ("loss", "accuracy")


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
