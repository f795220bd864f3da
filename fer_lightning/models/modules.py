"""LightningModules: one training loop, two ways to turn images into features.

:class:`FERModule` owns the loss, the metrics and the optimiser. :class:`SingleModalityModule` (visible or
infrared) and :class:`FusionModule` only differ in how many backbones they hold and how features are combined.
Batches are dicts: ``{"visible": (N,3,H,W), "infrared": (N,3,H,W), "label": (N,)}`` with the image keys the
modality needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from fer_lightning.errors import FERError
from fer_lightning.io import read_checkpoint
from fer_lightning.models.backbones import build_backbone
from fer_lightning.models.heads import build_head, fuse, fused_features

MODALITIES = ("visible", "infrared", "fusion")


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    kw = {"num_classes": num_classes}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(average="micro", **kw),
            "precision_macro": MulticlassPrecision(average="macro", **kw),
            "recall_macro": MulticlassRecall(average="macro", **kw),
            "f1_macro": MulticlassF1Score(average="macro", **kw),
            "precision_weighted": MulticlassPrecision(average="weighted", **kw),
            "recall_weighted": MulticlassRecall(average="weighted", **kw),
            "f1_weighted": MulticlassF1Score(average="weighted", **kw),
        },
        prefix=prefix,
    )


class FERModule(L.LightningModule):
    """Shared training logic. Subclasses fill ``self.backbones`` and ``self.head`` and define ``features``.

    Args:
        num_classes: number of expression classes.
        class_names: names in label order; stored in the checkpoint so evaluation and prediction need no dataset.
        optimizer: a partial optimiser taking the parameters (Hydra ``_partial_: true``).
        scheduler: a partial LR scheduler taking the optimiser, stepped once per epoch; or None.
        softmax_before_loss: the study's defect (softmax, then CrossEntropyLoss, which applies log-softmax
            again). Off by default; on only as an ablation.
        channels_last: store images and weights channels-last (faster convolutions on recent GPUs).
        compile: ``torch.compile`` each backbone in place when fitting (state-dict keys unchanged).
    """

    modalities: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        softmax_before_loss: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.softmax_before_loss = softmax_before_loss
        self.channels_last = channels_last
        # Not ``self.compile``: that is nn.Module's method.
        self.compile_backbones = compile
        # ModuleDict keys may not shadow Module attributes such as ``train``, hence the suffix.
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": stage_metrics(num_classes, f"{stage}/") for stage in ("train", "val", "test")}
        )
        self.test_outputs: dict[str, torch.Tensor] = {}
        self._test_chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns logits (N, num_classes)."""
        return self.head(self.features(batch))

    def _inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [m for m in self.modalities if m not in batch]
        if missing:
            raise FERError(f"a {'+'.join(self.modalities)} model needs {' and '.join(missing)} images too")
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return {m: batch[m].contiguous(memory_format=fmt) for m in self.modalities}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.softmax_before_loss:
            return F.cross_entropy(logits.softmax(dim=1), labels)
        return F.cross_entropy(logits, labels)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(self._inputs(batch))
        labels = batch["label"]
        loss = self.loss(logits, labels)
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), labels)
        bs = labels.shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test", batch_size=bs)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=bs)
        if stage == "test":
            self._test_chunks.append((logits.detach().float().softmax(1).cpu(), labels.cpu(), batch["index"].cpu()))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self._test_chunks = []

    def on_test_epoch_end(self) -> None:
        # Kept for results.json: bootstrap CIs and per-class tables need the individual predictions.
        probs, labels, index = (torch.cat(parts) for parts in zip(*self._test_chunks, strict=True))
        self.test_outputs = {"probs": probs, "labels": labels, "index": index}

    def predict_step(self, batch, batch_idx):
        return self(self._inputs(batch)).float().softmax(dim=1)

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_backbones:
            for backbone in self.backbones.values():
                backbone.compile()

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise FERError("model.optimizer is not set; add an optimizer config with _partial_: true")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class SingleModalityModule(FERModule):
    """A visible-only or infrared-only classifier: backbone -> attention -> head."""

    def __init__(self, modality: str, backbone: dict, head: dict, **kwargs):
        super().__init__(**kwargs)
        if modality not in ("visible", "infrared"):
            raise FERError(f"SingleModalityModule takes modality visible or infrared, not {modality!r}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.modalities = (modality,)
        self.backbones = nn.ModuleDict({modality: build_backbone(**backbone)})
        self.head = build_head(self.backbones[modality].out_features, self.num_classes, **head)

    def features(self, batch):
        (modality,) = self.modalities
        return self.backbones[modality](batch[modality])


class FusionModule(FERModule):
    """Two backbones (visible, infrared), fused feature by feature, one head.

    Args:
        backbone: arguments of :func:`build_backbone` for both branches.
        infrared_backbone: overrides for the infrared branch (e.g. ``attention: gate_sq``, or another ``name``:
            where the branches' widths then differ, the narrower one is projected to the wider's).
        fusion: ``interleave`` (the study's), ``concat`` or ``sum``.
        infrared_init: a checkpoint of a trained infrared :class:`SingleModalityModule` whose backbone
            initialises the infrared branch, as the study did.
        modality_dropout: in training, the fraction of samples that lose one branch's features (zeroed;
            which branch is a coin flip), so the head learns to classify from either modality alone instead of
            trusting one that is corrupted on this sample. 0 (the study) turns it off.
    """

    modalities = ("visible", "infrared")

    def __init__(
        self,
        backbone: dict,
        head: dict,
        fusion: str = "interleave",
        infrared_backbone: dict | None = None,
        infrared_init: str | None = None,
        modality_dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if not 0.0 <= modality_dropout <= 1.0:
            raise FERError(f"model.modality_dropout={modality_dropout}: must be in [0, 1]")
        self.modality_dropout = modality_dropout
        ir_args = {**backbone, **(infrared_backbone or {})}
        if ir_args.get("name") != backbone.get("name") and "kwargs" not in (infrared_backbone or {}):
            ir_args.pop("kwargs", None)  # the visible model's timm arguments need not fit another model
        self.backbones = nn.ModuleDict({"visible": build_backbone(**backbone), "infrared": build_backbone(**ir_args)})
        if infrared_init:
            self._init_infrared(Path(infrared_init))
        widths = {m: b.out_features for m, b in self.backbones.items()}
        if len(set(widths.values())) > 1:  # two backbone families: fusion pairs features one to one
            self.backbones[min(widths, key=widths.get)].project_to(max(widths.values()))
        fuse(torch.zeros(1, 2), torch.zeros(1, 2), fusion)  # fail at build time on an unknown mode
        self.fusion = fusion
        in_features = fused_features(self.backbones["visible"].out_features, fusion)
        self.head = build_head(in_features, self.num_classes, **head)

    def _init_infrared(self, path: Path) -> None:
        if not path.is_file():
            raise FERError(f"model.infrared_init={path}: no such checkpoint; train modality=infrared first")
        state = read_checkpoint(path, key="model.infrared_init")["state_dict"]
        prefix = "backbones.infrared."
        branch = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not branch:
            raise FERError(f"{path}: not an infrared checkpoint (no {prefix}* weights)")
        self.backbones["infrared"].load_state_dict(branch)

    def features(self, batch):
        visible, infrared = self.backbones["visible"](batch["visible"]), self.backbones["infrared"](batch["infrared"])
        if self.training and self.modality_dropout > 0:
            drop = torch.rand(len(visible), device=visible.device) < self.modality_dropout
            drop_visible = drop & (torch.rand(len(visible), device=visible.device) < 0.5)
            visible = visible * ~drop_visible[:, None]
            infrared = infrared * ~(drop & ~drop_visible)[:, None]
        return fuse(visible, infrared, self.fusion)
