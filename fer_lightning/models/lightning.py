"""LightningModules: one training loop (loss, metrics, optimiser, logging) around a network of
:mod:`fer_lightning.models.networks`.

:class:`FERModule` owns the training. :class:`SingleModalityModule` (visible or infrared) and :class:`FusionModule`
differ in the network they train and in the training-only parts of fusion: modality dropout and the per-branch
losses. Batches are dicts: ``{"visible": (N,3,H,W), "infrared": (N,3,H,W), "label": (N,)}`` with the image keys the
modality needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.metrics import stage_metrics
from fer_lightning.modalities import CAMERAS
from fer_lightning.models.mixup import mixup
from fer_lightning.models.networks import build_network
from fer_lightning.validation import Number

_FINITE_NONNEGATIVE = Number(float, 0)
# Numbers of model.optimizer / model.scheduler that torch refuses with a traceback, or accepts and never learns
# (lr=0, a cosine period below one). betas are tested one by one.
_NUMBER_RULES: dict[str, Number] = {
    "lr": Number(float, 0, low_open=True, hint=", e.g. 0.001 (with 0 the model never learns)"),
    "weight_decay": _FINITE_NONNEGATIVE,
    "momentum": _FINITE_NONNEGATIVE,
    "eps": _FINITE_NONNEGATIVE,
    "eta_min": _FINITE_NONNEGATIVE,
    "betas": Number(float, 0, 1, high_open=True, fix="use two numbers in [0, 1), e.g. [0.9,0.999]"),
    "gamma": Number(float, 0, low_open=True),
    "T_max": Number(int, 1, lenient=True, hint=" (it follows trainer.max_epochs unless set)"),
    "step_size": Number(int, 1, lenient=True),
}
MIXUP_ALPHA = Number(float, 0, hint=" (0 turns mixup off)")
AUX_LOSS_WEIGHT = Number(float, 0, hint=" (0 turns it off)")
MODALITY_DROPOUT = Number(float, 0, 1)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_optimizer_numbers(part: str, keywords: Mapping[str, Any] | None) -> None:
    """One line naming ``model.<part>.<key>`` for a number among ``keywords`` (the config node, or the partial's
    keywords) that cannot train."""
    for key, value in (keywords or {}).items():
        rule = _NUMBER_RULES.get(key)
        if rule is None:
            continue
        pair = key == "betas" and isinstance(value, Sequence) and not isinstance(value, str)
        values = list(value) if pair else [value]
        # a string is refused here even where the rule would parse it: torch takes the config's value as it is
        if not all(_is_number(v) and rule.ok(v) for v in values) or (key == "betas" and len(values) != 2):
            shown = f"[{','.join(map(str, values))}]" if pair else value
            raise FERError(f"model.{part}.{key}={shown}: {rule.advice()}")


class FERModule(L.LightningModule):
    """Shared training logic. Subclasses build their network and :meth:`hold` it.

    Args:
        num_classes: number of expression classes.
        class_names: names in label order; stored in the checkpoint so evaluation and prediction need no dataset.
        optimizer: a partial optimiser taking the parameters (Hydra ``_partial_: true``).
        scheduler: a partial LR scheduler taking the optimiser, stepped once per epoch; or None.
        softmax_before_loss: the study's defect (softmax, then CrossEntropyLoss, which applies log-softmax
            again). Off by default; on only as an ablation.
        channels_last: store images and weights channels-last (faster convolutions on recent GPUs).
        compile: ``torch.compile`` each backbone in place when fitting (state-dict keys unchanged).
        mixup_alpha: > 0: mixup in training (Zhang et al. 2018): each batch blended with a shuffled copy of
            itself by a Beta(alpha, alpha) weight, the targets blended alike (both cameras of a pair with the same
            partner and weight). 0: off.
    """

    modalities: tuple[str, ...] = ()
    # Whether forward() accepts a batch with only some of ``modalities``.
    supports_missing: bool = False

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        softmax_before_loss: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        mixup_alpha: float = 0.0,
    ):
        super().__init__()
        self.mixup_alpha = MIXUP_ALPHA.check("model.mixup_alpha", mixup_alpha)
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
        self._test_chunks: list[dict[str, torch.Tensor]] = []

    def hold(self, network: nn.Module) -> None:
        """Trains ``network``, holding its parts (``backbones``, ``head``, ...) as this module's own attributes:
        checkpoints keep the keys they always had, and load into the network alone."""
        object.__setattr__(self, "network", network)  # not a submodule: its parts are
        for name, part in network.named_children():
            self.add_module(name, part)

    def train(self, mode: bool = True):
        super().train(mode)
        self.network.training = mode  # its parts follow as this module's children
        return self

    def outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``{"logits": (N, num_classes)}``, plus whatever :meth:`auxiliary_loss` and the test records need
        (``"weights"``: (N, 2) per-sample modality weights, recorded for test)."""
        return self.network(batch)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns logits (N, num_classes)."""
        return self.outputs(batch)["logits"]

    def auxiliary_loss(self, outputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor | float:
        return 0.0

    def _inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [m for m in self.modalities if m not in batch]
        if missing and not (self.supports_missing and len(missing) < len(self.modalities)):
            raise FERError(f"a {'+'.join(self.modalities)} model needs {' and '.join(missing)} images too")
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return {m: batch[m].contiguous(memory_format=fmt) for m in self.modalities if m in batch}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against class indices (N,) or class probabilities (N, C), e.g. mixup's blends."""
        if self.softmax_before_loss:
            return F.cross_entropy(logits.softmax(dim=1), labels)
        return F.cross_entropy(logits, labels)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        inputs = self._inputs(batch)
        labels = target = batch["label"]
        if stage == "train" and self.mixup_alpha > 0:
            inputs, target, labels = mixup(inputs, labels, self.mixup_alpha, self.num_classes)
        out = self.outputs(inputs)
        logits = out["logits"]
        loss = self.loss(logits, target)
        if len(inputs) == len(self.modalities):  # with a modality missing (missing=) there is no branch to supervise
            loss = loss + self.auxiliary_loss(out, target)
        metrics = self.metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), labels)
        bs = labels.shape[0]
        # sync_dist: the mean over every rank's samples (one reduction per epoch; the metrics sync themselves)
        self.log(
            f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test", batch_size=bs, sync_dist=True
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=bs)
        if stage == "test":
            chunk = {"probs": logits.detach().float().softmax(1), "labels": labels, "index": batch["index"]}
            if out.get("weights") is not None:
                chunk["weights"] = out["weights"].detach().float()
            self._test_chunks.append({k: v.cpu() for k, v in chunk.items()})
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
        # "weights" (N, 2: visible, infrared) too, for models that weigh the modalities per sample.
        self.test_outputs = {k: torch.cat([c[k] for c in self._test_chunks]) for k in self._test_chunks[0]}

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
        # Here, not in __init__: evaluation builds the model too, and never steps an optimiser.
        check_optimizer_numbers("optimizer", getattr(self.optimizer_factory, "keywords", None))
        check_optimizer_numbers("scheduler", getattr(self.scheduler_factory, "keywords", None))
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class SingleModalityModule(FERModule):
    """Trains a visible-only or infrared-only :class:`~fer_lightning.models.networks.SingleModalityNet`."""

    def __init__(self, modality: str, backbone: dict, head: dict, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hold(build_network(self.hparams))
        self.modalities = (modality,)


class FusionModule(FERModule):
    """Trains a :class:`~fer_lightning.models.networks.FusionNet`: two backbones (visible, infrared) and a fusion
    mode (:mod:`fer_lightning.models.fusion`).

    Args:
        backbone: arguments of :func:`~fer_lightning.models.backbones.build_backbone` for both branches.
        infrared_backbone: overrides for the infrared branch (e.g. ``attention: gate_sq``, or another ``name``:
            where the branches' widths then differ, the narrower one is projected to the wider's).
        fusion: a registered mode: ``interleave`` (the study's), ``concat``, ``sum``, ``late``, ``gated`` or
            ``attention``.
        infrared_init: a checkpoint of a trained infrared :class:`SingleModalityModule` whose backbone
            initialises the infrared branch, as the study did.
        modality_dropout: in training, the fraction of samples that lose one branch (which branch is a coin flip),
            so the model learns to classify from either modality alone instead of trusting one that is corrupted
            on this sample. 0 (the study) turns it off. The lost branch's features are zeroed; ``late`` averages
            only the other branch's logits; ``gated`` replaces the lost branch's *image* by noise or a constant
            (so the gate learns to spot a failed camera, not zeros) and trains the gate to weigh the other branch.
        late_combine: ``late`` only: ``mean`` of the branch logits, or ``learned`` weights.
        aux_loss_weight: weight of per-branch classification losses (a linear classifier on each branch's
            pooled feature; ``late``: its branch heads), so each branch stays a classifier on its own. 0: off.
        gate: ``gated`` only: ``hidden`` width, ``quality`` (add :func:`.image_quality` statistics to the gate's
            input) and ``loss_weight``: the weight of the gate's own loss towards :func:`.gate_target` (the kept
            branch on modality-dropped samples; with ``aux_loss_weight`` > 0, also the branch that is right).
        cross_attention: ``attention`` only: ``dim``, ``heads``, ``layers`` of :class:`.AttentionFusion`.
    """

    modalities = CAMERAS

    def __init__(
        self,
        backbone: dict,
        head: dict,
        fusion: str = "interleave",
        infrared_backbone: dict | None = None,
        infrared_init: str | None = None,
        modality_dropout: float = 0.0,
        late_combine: str = "mean",
        aux_loss_weight: float = 0.0,
        gate: dict | None = None,
        cross_attention: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        MODALITY_DROPOUT.check("model.modality_dropout", modality_dropout)
        AUX_LOSS_WEIGHT.check("model.aux_loss_weight", aux_loss_weight)
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        self.aux_loss_weight = aux_loss_weight
        self.hold(build_network(self.hparams))

    @property
    def supports_missing(self) -> bool:
        return self.network.supports_missing

    def _keep_masks(self, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Per modality, (N,) True where the branch is kept; each dropped sample loses exactly one branch."""
        drop = torch.rand(n, device=device) < self.modality_dropout
        drop_visible = drop & (torch.rand(n, device=device) < 0.5)
        return {"visible": ~drop_visible, "infrared": ~(drop & ~drop_visible)}

    def outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The network's outputs (``logits``, ``weights`` (N, 2) where the mode weighs modalities per sample,
        ``branch_logits`` for the auxiliary losses), and ``keep``: the modality-dropout masks in training."""
        images = self.network.present(batch)
        keep = None
        if self.training and self.modality_dropout > 0 and len(images) == len(CAMERAS):
            first = next(iter(images.values()))
            keep = self._keep_masks(len(first), first.device)
        return {**self.network(images, keep), "keep": keep}

    def auxiliary_loss(self, outputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor | float:
        loss = 0.0
        keep = outputs.get("keep")
        if self.aux_loss_weight and outputs.get("branch_logits"):
            # A branch is not asked to classify a sample whose image (or feature) it lost.
            terms = []
            for m, logits in outputs["branch_logits"].items():
                kept = keep[m] if keep is not None else torch.ones(len(labels), dtype=torch.bool, device=logits.device)
                terms.append(F.cross_entropy(logits, labels, reduction="none") * kept)
            loss = loss + self.aux_loss_weight * torch.stack(terms).sum() / max(len(labels), 1)
        # the mode's own term (the gate's)
        return loss + self.fuser.loss(outputs, labels)
