"""Fusion modes: each trains, weighs modalities as documented, copes with a missing image where it should."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.models.backbone_base import FeatureGate
from fer_lightning.models.backbones import build_backbone
from fer_lightning.models.fusion import (
    CAMERAS,
    FUSIONS,
    Fusion,
    gate_target,
    modality_weight_summary,
    register_fusion,
)
from fer_lightning.models.heads import build_head
from fer_lightning.models.lightning import FusionModule
from fer_lightning.models.networks import build_network
from fer_lightning.runs import train_and_test
from tests.conftest import TINY, compose_cfg

BB = {"name": "resnet18", "attention": "gate"}
HEAD = {"hidden": 8}
MODES = [*FUSIONS, "late_learned"]


def fusion_args(mode: str) -> list[str]:
    if mode == "late_learned":
        return ["model.fusion=late", "model.late_combine=learned"]
    return [f"model.fusion={mode}"]


def pair_batch(n: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"visible": torch.randn(n, 3, size, size), "infrared": torch.randn(n, 3, size, size)}


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


def test_gate_weights_sum_to_one_and_follow_the_input():
    model = FusionModule(BB, HEAD, num_classes=3, fusion="gated").eval()
    batch = pair_batch()
    with torch.no_grad():
        out = model.outputs(batch)
        other = model.outputs({**batch, "infrared": torch.zeros_like(batch["infrared"])})
    assert out["weights"].shape == (4, 2) and (out["weights"] > 0).all()
    assert torch.allclose(out["weights"].sum(1), torch.ones(4))
    assert not torch.allclose(out["weights"], other["weights"])  # per sample, not a constant


@pytest.mark.parametrize("mode", list(FUSIONS))
def test_every_registered_mode_does_what_it_declares(mode):
    """Builds, gives (N, C) logits and the outputs it declares, trains, answers from one camera where it says it
    can (and refuses where not), and is a network of its own under the LightningModule's checkpoint keys."""
    cls = FUSIONS[mode]
    torch.manual_seed(0)
    model = FusionModule(BB, HEAD, num_classes=3, fusion=mode, aux_loss_weight=0.5, modality_dropout=0.5)
    assert type(model.fuser) is cls and model.supports_missing == cls.one_camera
    first_linear = next(m for m in model.head.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == cls.width(512)
    batch, labels = pair_batch(), torch.tensor([0, 1, 2, 0])
    out = model.train().outputs(batch)
    assert out["logits"].shape == (4, 3) and set(cls.aux_outputs) <= set(out)
    assert set(out["branch_logits"]) == set(CAMERAS)  # the branch classifiers', or the mode's own
    loss = model.loss(out["logits"], labels) + model.auxiliary_loss(out, labels)
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    one = {"infrared": batch["infrared"]}
    if cls.one_camera:
        assert model(one).shape == (4, 3)
    else:
        with pytest.raises(FERError, match=f"model.fusion={mode} needs both images"):
            model(one)
    network = build_network(model.hparams)
    network.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(network.eval()(batch)["logits"], model(batch))


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


def test_gate_target_trusts_the_right_branch_and_the_kept_one():
    labels = torch.tensor([0, 1, 2])
    logits = {"visible": torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 5, 0]]), "infrared": torch.zeros(3, 3)}
    target = gate_target(labels, logits)
    assert torch.allclose(target.sum(1), torch.ones(3))
    assert target[0, 0] > 0.7 and target[1, 0] > 0.7 and target[2, 0] < 0.2  # visible right on 0 and 1, wrong on 2
    keep = {"visible": torch.tensor([True, False, True]), "infrared": torch.tensor([True, True, True])}
    assert gate_target(labels, logits, keep)[1].tolist() == [0.0, 1.0]  # lost its photo: all on infrared
    alone = gate_target(labels, None, keep)
    assert alone.tolist() == [[0, 0], [0, 1], [0, 0]]  # without branch classifiers only dropped rows are known
    assert gate_target(labels) is None


def test_learned_late_weights_are_one_shared_pair():
    model = FusionModule(BB, HEAD, num_classes=3, fusion="late", late_combine="learned").eval()
    with torch.no_grad():
        model.fuser.logit.copy_(torch.tensor([1.0, 0.0]))
        out = model.outputs(pair_batch())
        branch = out["branch_logits"]
    w = torch.tensor([1.0, 0.0]).softmax(0)
    assert torch.allclose(out["weights"], w.expand(4, 2))
    assert torch.allclose(out["logits"], w[0] * branch["visible"] + w[1] * branch["infrared"], atol=1e-6)
    assert FusionModule(BB, HEAD, num_classes=3, fusion="late").eval().outputs(pair_batch())["weights"] is None


@pytest.mark.parametrize("present", ["visible", "infrared"])
def test_late_and_gated_predict_from_the_present_modality(present):
    batch = {present: pair_batch()[present]}
    for mode in ("late", "gated"):
        model = FusionModule(BB, HEAD, num_classes=3, fusion=mode).eval()
        assert model.supports_missing
        with torch.no_grad():
            out = model.outputs(batch)
            feature = model.backbones[present](batch[present])
            alone = model.head[present](feature) if mode == "late" else model.head(F.layer_norm(feature, (512,)))
        assert torch.allclose(out["logits"], alone, atol=1e-6), mode
        if mode == "gated":
            assert out["weights"][:, ("visible", "infrared").index(present)].eq(1).all()
        assert model.predict_step(batch, 0).shape == (4, 3)


@pytest.mark.parametrize("present", ["visible", "infrared"])
def test_gated_with_branch_classifiers_predicts_one_camera_with_its_own_classifier(present):
    # The fused head only ever saw features mixed with the partner's share; the branch's own classifier was
    # trained on that branch alone, so it is the one that answers when the other image is missing.
    batch = {present: pair_batch()[present]}
    model = FusionModule(BB, HEAD, num_classes=3, fusion="gated", aux_loss_weight=1.0).eval()
    with torch.no_grad():
        out = model.outputs(batch)
        own = model.aux_heads[present](model.backbones[present](batch[present]))
        fused_head = model.head(F.layer_norm(model.backbones[present](batch[present]), (512,)))
    assert torch.allclose(out["logits"], own, atol=1e-6)
    assert not torch.allclose(out["logits"], fused_head, atol=1e-3)
    assert out["weights"][:, ("visible", "infrared").index(present)].eq(1).all()


@pytest.mark.parametrize("mode", ["interleave", "concat", "sum", "attention"])
def test_other_modes_refuse_a_missing_modality(mode):
    model = FusionModule(BB, HEAD, num_classes=3, fusion=mode).eval()
    assert not model.supports_missing
    with pytest.raises(FERError, match=f"model.fusion={mode} needs both images but infrared is missing"):
        model({"visible": pair_batch()["visible"]})
    with pytest.raises(FERError, match="needs visible images too"):
        model.predict_step({"infrared": pair_batch()["infrared"]}, 0)


def test_bad_fusion_settings_are_one_line_errors():
    with pytest.raises(FERError, match=r"model.fusion=bogus: unknown fusion mode; use one of interleave, .*attention"):
        FusionModule(BB, HEAD, num_classes=3, fusion="bogus")
    with pytest.raises(FERError, match=r"model\.late_combine=max"):
        FusionModule(BB, HEAD, num_classes=3, fusion="late", late_combine="max")
    with pytest.raises(FERError, match=r"model\.aux_loss_weight=-1"):
        FusionModule(BB, HEAD, num_classes=3, aux_loss_weight=-1)


def test_attention_mixes_spatial_maps_across_modalities():
    model = FusionModule(BB, HEAD, num_classes=3, fusion="attention").eval()
    batch = pair_batch(2, 64)
    maps = {m: model.backbones[m].feature_map(batch[m]) for m in batch}
    assert maps["visible"].shape == (2, 512, 2, 2)
    # zero-initialised output projections: the untrained block passes the maps through unchanged
    refined = model.fuser.refine(maps)
    assert all(torch.equal(refined[m], maps[m]) for m in maps)
    for proj in model.fuser.proj_out.values():
        nn.init.normal_(proj.weight, std=0.02)
    changed = {**batch, "infrared": torch.randn_like(batch["infrared"])}
    with torch.no_grad():
        before = model.fuser.refine(maps)["visible"]
        after = model.fuser.refine({**maps, "infrared": model.backbones["infrared"].feature_map(changed["infrared"])})
    assert not torch.allclose(before, after["visible"])  # the visible map now depends on the thermal one


class _OldBackbone(nn.Module):
    """The Backbone before ``feature_map`` / ``pool``: ``attention(trunk(x))``, ``trunk.fc`` removed."""

    def __init__(self):
        super().__init__()
        self.trunk = torchvision.models.resnet18(weights=None)
        self.trunk.fc = nn.Identity()
        self.attention = FeatureGate(512)

    def forward(self, x):
        return self.attention(self.trunk(x))


def test_backbone_forward_is_pool_of_feature_map_and_old_state_dicts_load():
    torch.manual_seed(0)
    old = {m: _OldBackbone().eval() for m in ("visible", "infrared")}
    old_head = build_head(1024, 3, **HEAD).eval()
    state = {f"backbones.{m}.{k}": v for m, b in old.items() for k, v in b.state_dict().items()}
    state |= {f"head.{k}": v for k, v in old_head.state_dict().items()}
    model = FusionModule(BB, HEAD, num_classes=3).eval()
    model.load_state_dict(state, strict=True)  # the study's interleave checkpoint keys are unchanged
    batch = pair_batch()
    with torch.no_grad():
        feats = {m: old[m](batch[m]) for m in batch}
        expected = old_head(torch.stack((feats["visible"], feats["infrared"]), 2).flatten(1))
        assert torch.allclose(model(batch), expected, atol=1e-5)
        backbone = model.backbones["visible"]
        fmap = backbone.feature_map(batch["visible"])
        assert fmap.shape == (4, backbone.map_channels, 1, 1)
        assert torch.equal(backbone(batch["visible"]), backbone.pool(fmap))
    single = build_backbone("resnet18", attention="gate")
    single.load_state_dict(old["visible"].state_dict(), strict=True)


def test_modality_weight_summary_means_per_class():
    weights = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    summary = modality_weight_summary(weights, torch.tensor([1, 1, 0]), ["Angry", "Happy", "Sad"])
    assert list(summary) == ["Angry", "Happy", "all"]
    assert summary["Happy"] == {"visible": 0.8, "infrared": 0.2, "n": 2}
    assert summary["Angry"] == {"visible": 0.2, "infrared": 0.8, "n": 1}
    assert summary["all"]["visible"] == pytest.approx(0.6) and summary["all"]["n"] == 3
    by_condition = modality_weight_summary(weights, ["clean", "hot_object", "clean"])
    assert by_condition["hot_object"] == {"visible": 0.7, "infrared": 0.3, "n": 1}
    with pytest.raises(FERError, match=r"shape \(N, 2\)"):
        modality_weight_summary(torch.ones(3, 3), [0, 1, 2], ["a", "b", "c"])


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


def test_gate_loss_averages_only_rows_with_a_target():
    """Rows where nothing is known (no branch classifiers, both cameras kept) add nothing, as with the boolean
    row selection the loss replaced (that one waited for the GPU on every step)."""
    model = FusionModule(BB, HEAD, num_classes=3, fusion="gated", aux_loss_weight=0.0, gate={"loss_weight": 0.7})
    labels = torch.tensor([0, 1, 2, 0, 1])
    keep = {
        "visible": torch.tensor([True, False, True, True, True]),
        "infrared": torch.tensor([True, True, True, False, True]),
    }
    weights = torch.tensor([[0.2, 0.8], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1], [0.6, 0.4]])
    loss = model.auxiliary_loss({"weights": weights, "keep": keep}, labels)
    target = gate_target(labels, None, keep)
    rows = target.sum(1) > 0
    assert rows.tolist() == [False, True, False, True, False]
    expected = 0.7 * -(target[rows] * weights[rows].log()).sum(1).mean()
    assert torch.allclose(loss, expected)
    none_dropped = {m: torch.ones(5, dtype=torch.bool) for m in CAMERAS}
    assert float(model.auxiliary_loss({"weights": weights, "keep": none_dropped}, labels)) == 0.0
