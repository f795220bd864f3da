"""Fusion modes: each weighs modalities as documented and copes with a missing image where it should (training
runs: tests/integration/test_fusion_training.py)."""

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
    gate_target,
    modality_weight_summary,
)
from fer_lightning.models.heads import build_head
from fer_lightning.models.lightning import FusionModule
from fer_lightning.models.networks import build_network

BB = {"name": "resnet18", "attention": "gate"}
HEAD = {"hidden": 8}


def pair_batch(n: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"visible": torch.randn(n, 3, size, size), "infrared": torch.randn(n, 3, size, size)}


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
