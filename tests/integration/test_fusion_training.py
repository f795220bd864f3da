"""Fusion modes through training runs (debug fast, a registered mode, a trained gate)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fer_lightning.models.fusion import (
    CAMERAS,
    FUSIONS,
    Fusion,
    register_fusion,
)
from fer_lightning.runs import train_and_test
from tests.conftest import TINY, compose_cfg

MODES = [*FUSIONS, "late_learned"]


def fusion_args(mode: str) -> list[str]:
    if mode == "late_learned":
        return ["model.fusion=late", "model.late_combine=learned"]
    return [f"model.fusion={mode}"]


@pytest.mark.parametrize("mode", MODES)
def test_every_fusion_mode_trains_with_debug_fast(mode, tmp_path, data_dir):
    overrides = [*TINY, "modality=fusion", *fusion_args(mode), "model.aux_loss_weight=0.5", "debug=fast"]
    results, run = train_and_test(compose_cfg(overrides, tmp_path / "run", data_dir))
    model, dm = run.model, run.datamodule
    n_test = len(dm.test_dataloader().dataset)
    assert results["test"]["n"] == n_test
    weighted = mode in ("gated", "late_learned")
    assert ("weights" in model.test_outputs) == weighted
    if weighted:
        weights = model.test_outputs["weights"]
        assert weights.shape == (n_test, 2) and torch.allclose(weights.sum(1), torch.ones(n_test))

    batch = dm.normalize(next(iter(dm.test_dataloader())))
    labels = batch["label"]
    model.eval()
    with torch.no_grad():
        assert model(batch).shape == (len(labels), len(dm.classes))
        # without modality dropout, the training loss is the fused cross-entropy plus 0.5 x each branch's
        model.train()
        model.modality_dropout = 0.0
        torch.manual_seed(1)
        out = model.outputs(batch)
        total = model.loss(out["logits"], labels) + model.auxiliary_loss(out, labels)
        branch = sum(F.cross_entropy(out["branch_logits"][m], labels) for m in CAMERAS)
        expected = F.cross_entropy(out["logits"], labels) + 0.5 * branch
        if mode == "gated":  # the gate learns to trust the branch that gives the true class more probability
            p_true = torch.stack(
                [out["branch_logits"][m].softmax(1)[range(len(labels)), labels] for m in CAMERAS], 1
            )
            target = p_true / p_true.sum(1, keepdim=True)
            expected = expected - (target * out["weights"].log()).sum(1).mean()
    assert torch.isfinite(total) and torch.allclose(total, expected)


def test_a_mode_registered_in_a_test_trains_and_predicts_through_fusion_module(tmp_path, data_dir):
    @register_fusion("toy_max")
    class MaxFusion(Fusion):
        """The element-wise maximum of the two branches' pooled features."""

        def forward(self, net, images, keep):
            feats = net.pooled(images)
            return {"logits": net.head(torch.maximum(feats["visible"], feats["infrared"])), "features": feats}

    try:
        overrides = [*TINY, "modality=fusion", "model.fusion=toy_max", "debug=fast"]
        results, run = train_and_test(compose_cfg(overrides, tmp_path / "run", data_dir))
        assert results["test"]["n"] == len(run.datamodule.test_dataloader().dataset)
        assert type(run.model.fuser) is MaxFusion and not run.model.supports_missing
        assert run.model.head[1].in_features == 512  # Fusion.width: one branch's
    finally:
        del FUSIONS["toy_max"]


@pytest.mark.slow
def test_trained_gate_trusts_the_clean_branch_when_the_other_is_noise(tmp_path):
    """Easy synthetic faces, a few epochs: replacing one camera's image by noise moves the weight to the other.

    A constant gate (or one that ignores its input) gives the same weights in all three cases and fails.
    """
    overrides = [
        *TINY,
        "dataset.generator.difficulty=easy",
        "modality=fusion",
        "model.fusion=gated",
        "model.modality_dropout=0.5",
        "trainer.max_epochs=8",
        "logger=none",
    ]
    _, run = train_and_test(compose_cfg(overrides, tmp_path / "run", tmp_path / "data"))
    model, dm = run.model.eval(), run.datamodule
    batch = dm.normalize(next(iter(dm.test_dataloader())))
    torch.manual_seed(0)
    with torch.no_grad():
        clean = model.outputs(batch)["weights"]
        ir_noise = model.outputs({**batch, "infrared": torch.randn_like(batch["infrared"])})["weights"]
        vis_noise = model.outputs({**batch, "visible": torch.randn_like(batch["visible"])})["weights"]
    vis, ir = 0, 1
    # the clean branch gains weight on (nearly) every sample, and on average by a clear margin
    assert (ir_noise[:, vis] > clean[:, vis]).float().mean() >= 0.9
    assert (vis_noise[:, ir] > clean[:, ir]).float().mean() >= 0.9
    # measured with the default aux_loss_weight 1.0: 0.67 on visible with thermal noise, 0.92 on infrared with
    # visible noise (0.98 / 0.95 with 0.3: the branch classifiers' own say in the gate's target softens it)
    assert ir_noise[:, vis].mean() > 0.6 and vis_noise[:, ir].mean() > 0.6, (ir_noise.mean(0), vis_noise.mean(0))
