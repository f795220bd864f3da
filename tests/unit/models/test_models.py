import functools
import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.models import backbones
from fer_lightning.models.backbone_base import FeatureGate
from fer_lightning.models.backbones import build_backbone
from fer_lightning.models.fusion import fuse
from fer_lightning.models.heads import build_head
from fer_lightning.models.lightning import FusionModule, SingleModalityModule
from tests.conftest import compose_cfg
from tests.helpers.study import STUDY_HEADS, describe


@pytest.mark.parametrize("modality", ["visible", "infrared", "fusion"])
def test_configured_heads_match_the_study(modality, tmp_path):
    from fer_lightning.runs import build_model

    # the study's interleave: its 1024-d fused feature is what the study's fusion head reads (the default and
    # ours fuse gated, one 512-d weighted feature, into the same layers)
    fusion = ["model.fusion=interleave"] if modality == "fusion" else []
    overrides = [f"modality={modality}", "dataset=viri", "model.backbone.weights=null", *fusion]
    cfg = compose_cfg(overrides, tmp_path)
    model = build_model(cfg.model, ["Angry", "Happy", "Neutral", "Sad", "Surprise"])
    expected = STUDY_HEADS[modality]
    if modality == "fusion":  # the default head leaves out the study's dropout on the logits; the paper presets add it
        expected = expected[:-1]
    assert describe(model.head, 5) == expected
    expected_cls = FusionModule if modality == "fusion" else SingleModalityModule
    assert type(model) is expected_cls
    for b in model.backbones.values():
        assert isinstance(b.attention, FeatureGate) and not b.attention.square
    logits = model.eval()({m: torch.rand(2, 3, 32, 32) for m in ("visible", "infrared")})
    assert logits.shape == (2, 5)


def test_feature_gate_is_x_times_sigmoid_wx():
    gate = FeatureGate(4)
    x = torch.randn(3, 4)
    assert torch.allclose(gate(x), x * torch.sigmoid(gate.fc(x)))
    sq = FeatureGate(4, square=True)
    assert torch.allclose(sq(x), x * torch.sigmoid(sq.fc(x * x)))


def test_interleave_fusion_order_is_v0_i0_v1_i1():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    i = torch.tensor([[10.0, 20.0, 30.0]])
    assert fuse(v, i, "interleave").tolist() == [[1, 10, 2, 20, 3, 30]]
    assert fuse(v, i, "concat").tolist() == [[1, 2, 3, 10, 20, 30]]
    with pytest.raises(FERError, match="unknown fusion mode"):
        fuse(v, i, "bogus")


def test_loss_is_on_logits_and_softmax_only_as_ablation():
    head = {"hidden": 8}
    bb = {"name": "resnet18", "attention": "none"}
    plain = SingleModalityModule("visible", bb, head, num_classes=3)
    ablation = SingleModalityModule("visible", bb, head, num_classes=3, softmax_before_loss=True)
    logits = torch.tensor([[4.0, 0.0, -2.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 2])
    assert torch.allclose(plain.loss(logits, labels), F.cross_entropy(logits, labels))
    assert torch.allclose(ablation.loss(logits, labels), F.cross_entropy(logits.softmax(1), labels))
    assert not torch.allclose(plain.loss(logits, labels), ablation.loss(logits, labels))


def test_weights_load_from_a_saved_torchvision_state_dict(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", attention="gate", weights=str(path))
    for k, v in reference.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(backbone.trunk.state_dict()[k], v), k
    fresh = build_backbone("resnet18", attention="gate", weights=None)
    assert not torch.equal(fresh.trunk.conv1.weight, reference.conv1.weight)


def test_weights_load_from_a_saved_backbone_state_dict(tmp_path):
    source = build_backbone("resnet18", attention="gate")
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("resnet18", attention="gate", weights=str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_bad_weights_give_one_line_errors(tmp_path):
    with pytest.raises(FERError, match="no such file"):
        build_backbone("resnet18", weights=str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FERError, match="not a loadable state dict"):
        build_backbone("resnet18", weights=str(junk))
    r50 = tmp_path / "r50.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(FERError, match="do not fit"):
        build_backbone("resnet18", weights=str(r50))
    with pytest.raises(FERError, match="unknown backbone"):
        build_backbone("vgg11")
    with pytest.raises(FERError, match="unknown attention"):
        build_backbone("resnet18", attention="spatial")


def test_imagenet_offline_says_where_to_put_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(FERError) as err:
        build_backbone("resnet18", weights="imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "resnet18-f37072fd.pth" in msg and "model.backbone.weights=null" in msg


def test_backbone_registry_has_resnet18_34_50():
    assert {"resnet18", "resnet34", "resnet50"} <= set(backbones.BACKBONES)
    assert build_backbone("resnet50", attention="none").out_features == 2048


def test_study_head_builder_sequence():
    head = build_head(
        1024,
        3,
        hidden=256,
        dropout_in=0.2,
        activation="relu",
        batchnorm=True,
        dropout_hidden=0.2,
        dropout_out=0.2,
    )
    assert describe(head, 5)[-1] == ("Dropout", 0.2)
    assert describe(head, 5)[1] == ("Linear", 1024, 256)


def test_fusion_infrared_init_copies_the_trained_infrared_backbone(tmp_path):
    bb = {"name": "resnet18", "attention": "gate"}
    ir = SingleModalityModule("infrared", bb, {"hidden": 8}, num_classes=3)
    path = tmp_path / "ir.ckpt"
    torch.save({"state_dict": ir.state_dict()}, path)
    fusion = FusionModule(bb, {"hidden": 8}, num_classes=3, infrared_init=str(path))
    for k, v in ir.backbones["infrared"].state_dict().items():
        assert torch.equal(fusion.backbones["infrared"].state_dict()[k], v)
    with pytest.raises(FERError, match="not an infrared checkpoint"):
        vis = SingleModalityModule("visible", bb, {"hidden": 8}, num_classes=3)
        torch.save({"state_dict": vis.state_dict()}, path)
        FusionModule(bb, {"hidden": 8}, num_classes=3, infrared_init=str(path))


def head_input(model: nn.Module, batch: dict) -> torch.Tensor:
    """The fused feature the model's head sees on ``batch``."""
    seen = []
    hook = model.head.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        model(batch)
    finally:
        hook.remove()
    return seen[0]


def test_modality_dropout_zeroes_one_branch_per_dropped_sample_in_training_only():
    bb = {"name": "resnet18", "attention": "none"}
    torch.manual_seed(0)
    model = FusionModule(bb, {"hidden": 8}, num_classes=3, fusion="concat", modality_dropout=1.0)
    batch = {"visible": torch.rand(64, 3, 32, 32), "infrared": torch.rand(64, 3, 32, 32)}
    model.train()
    feats = head_input(model, batch)
    d = feats.shape[1] // 2
    visible_gone = (feats[:, :d] == 0).all(1)
    infrared_gone = (feats[:, d:] == 0).all(1)
    assert (visible_gone ^ infrared_gone).all()  # exactly one branch per sample, never both
    assert 10 < visible_gone.sum() < 54  # the branch is a coin flip
    model.eval()
    with torch.no_grad():
        feats = head_input(model, batch)
    assert not (feats[:, :d] == 0).all(1).any() and not (feats[:, d:] == 0).all(1).any()
    with pytest.raises(FERError, match="modality_dropout"):
        FusionModule(bb, {"hidden": 8}, num_classes=3, modality_dropout=1.5)


def _recorder(module):
    """Replaces ``module.outputs`` by a wrapper that keeps the inputs it was given."""
    seen, real = [], module.outputs

    def outputs(inputs):
        seen.append({m: x.clone() for m, x in inputs.items()})
        return real(inputs)

    module.outputs = outputs
    return seen


def test_mixup_blends_both_cameras_with_one_partner_and_the_targets_alike():
    torch.manual_seed(0)
    model = FusionModule(
        {"name": "resnet18"}, {"hidden": 8}, fusion="gated", aux_loss_weight=1.0, num_classes=3, mixup_alpha=0.4
    )
    model.log = model.log_dict = lambda *a, **k: None
    seen = _recorder(model)
    visible, infrared = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    batch = {"visible": visible, "infrared": infrared, "label": labels, "index": torch.arange(6)}
    torch.manual_seed(1)
    loss = model.training_step(batch, 0)
    torch.manual_seed(1)  # the same draws again, by hand
    share = torch.distributions.Beta(0.4, 0.4).sample().item()
    partner = torch.randperm(6)
    assert 0 < share < 1 and not torch.equal(partner, torch.arange(6))
    for m, x in (("visible", visible), ("infrared", infrared)):
        assert torch.allclose(seen[0][m], share * x + (1 - share) * x[partner])
    assert torch.isfinite(loss) and loss.requires_grad
    # validation never mixes
    seen.clear()
    model.validation_step(batch, 0)
    assert torch.equal(seen[0]["visible"], visible)


def test_mixup_loss_is_the_blend_of_the_two_labels_losses():
    model = SingleModalityModule("visible", {"name": "resnet18"}, {"hidden": 8}, num_classes=3)
    logits, a, b = torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 1])
    target = 0.3 * F.one_hot(a, 3).float() + 0.7 * F.one_hot(b, 3).float()
    expected = 0.3 * F.cross_entropy(logits, a) + 0.7 * F.cross_entropy(logits, b)
    assert model.loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    for alpha in (-1, math.inf, math.nan):
        with pytest.raises(FERError, match=rf"model\.mixup_alpha={alpha}: use a finite number >= 0"):
            SingleModalityModule("visible", {"name": "resnet18"}, {"hidden": 8}, num_classes=3, mixup_alpha=alpha)


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "message"),
    [
        ({"lr": -1}, {}, "model.optimizer.lr=-1: use a finite number > 0"),
        ({"lr": math.nan}, {}, "model.optimizer.lr=nan: use a finite number > 0"),
        ({"lr": 1e-3, "weight_decay": -0.1}, {}, "model.optimizer.weight_decay=-0.1: use a finite number >= 0"),
        ({"lr": 1e-3, "betas": [0.9, 1.0]}, {}, "model.optimizer.betas=[0.9,1.0]: use two numbers in [0, 1)"),
        ({"lr": 1e-3}, {"T_max": 0}, "model.scheduler.T_max=0: use an integer >= 1"),
        ({"lr": 1e-3}, {"T_max": 3, "eta_min": -1}, "model.scheduler.eta_min=-1: use a finite number >= 0"),
    ],
)
def test_optimiser_numbers_that_cannot_train_are_one_line_naming_the_key(optimizer, scheduler, message):
    """Checked when fitting starts (torch would raise, or accept lr=0 / T_max=0 and fail later)."""
    model = SingleModalityModule(
        "visible",
        {"name": "resnet18"},
        {"hidden": 8},
        num_classes=3,
        optimizer=functools.partial(torch.optim.Adam, **optimizer),
        scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, **{"T_max": 3, **scheduler}),
    )
    with pytest.raises(FERError) as exc:
        model.configure_optimizers()
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)
