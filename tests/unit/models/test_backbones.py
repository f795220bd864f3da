"""The backbone registry: ResNets and timm models behind one interface, their weights, and their use in models."""

from __future__ import annotations

import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.models.backbone_base import FeatureGate
from fer_lightning.models.backbones import BACKBONES, build_backbone
from fer_lightning.models.fusion import FUSIONS
from fer_lightning.models.lightning import FusionModule
from tests.conftest import TINY, compose_cfg
from tests.helpers.settings import TIMM

ALL = {**{name: {} for name in BACKBONES}, **TIMM}


def _x(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32)


@pytest.mark.parametrize("name", ALL)
def test_every_backbone_has_the_map_pool_interface(name):
    backbone = build_backbone(name, attention="gate", kwargs=ALL[name]).eval()
    x = _x()
    with torch.no_grad():
        fmap = backbone.feature_map(x)
        pooled = backbone.pool(fmap)
        assert fmap.ndim == 4 and fmap.shape[:2] == (2, backbone.map_channels) and min(fmap.shape[2:]) >= 1
        assert pooled.shape == (2, backbone.out_features)
        assert torch.allclose(backbone(x), pooled, atol=1e-6)
    assert isinstance(backbone.attention, FeatureGate) and backbone.attention.fc.in_features == backbone.out_features
    layer, _ = backbone.cam_target()
    assert any(layer is m for m in backbone.modules())


def test_timm_feature_sizes_come_from_the_model():
    for name, kwargs in TIMM.items():
        model = timm.create_model(name.removeprefix("timm/"), num_classes=0, **kwargs)
        backbone = build_backbone(name, attention="none", kwargs=kwargs)
        assert backbone.out_features == model(_x()).shape[1]
        assert backbone.map_channels == model.num_features
    # MobileNetV3's head convolution widens the pooled vector beyond the map's channels
    mobilenet = build_backbone("timm/mobilenetv3_small_050", attention="none")
    assert (mobilenet.map_channels, mobilenet.out_features) == (288, 1024)


def test_vit_map_is_the_patch_grid_without_the_class_token():
    backbone = build_backbone("timm/vit_tiny_patch16_224", attention="none", kwargs={"img_size": 64}).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        tokens = backbone.trunk.forward_features(x)
        fmap = backbone.feature_map(x)
    assert tokens.shape == (1, 1 + 16, 192) and fmap.shape == (1, 192, 4, 4)
    # patch (row 1, column 2) is token 1 + 1*4 + 2
    assert torch.equal(fmap[0, :, 1, 2], tokens[0, 1 + 1 * 4 + 2])


def test_cam_targets_are_the_last_stage():
    resnet = build_backbone("resnet18")
    assert resnet.cam_target() == (resnet.trunk.layer4, None)
    convnext = build_backbone("timm/convnext_atto")
    assert convnext.cam_target()[0] is convnext.trunk.stages[-1]
    mobilenet = build_backbone("timm/mobilenetv3_small_050")
    assert mobilenet.cam_target()[0] is mobilenet.trunk.blocks[-1]
    vit = build_backbone("timm/vit_tiny_patch16_224", kwargs={"img_size": 32})
    layer, reshape = vit.cam_target()
    assert layer is vit.trunk.blocks[-1].norm1
    assert reshape(torch.rand(2, 1 + 4, 192)).shape == (2, 192, 2, 2)


def test_grad_cam_runs_on_a_vit_with_its_token_reshape():
    backbone = build_backbone("timm/vit_tiny_patch16_224", attention="gate", kwargs={"img_size": 32}).eval()
    model = nn.Sequential(backbone, nn.Linear(backbone.out_features, 3))
    layer, reshape = backbone.cam_target()
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        heat = cam(input_tensor=_x(1), targets=[ClassifierOutputTarget(1)])
    assert heat.shape == (1, 32, 32) and heat.min() >= 0


@pytest.mark.parametrize("name", TIMM)
def test_timm_weights_load_from_a_saved_state_dict(name, tmp_path):
    kwargs = TIMM[name]
    # a bare timm model with its ImageNet classifier, as timm saves them
    reference = timm.create_model(name.removeprefix("timm/"), num_classes=1000, **kwargs)
    path = tmp_path / "trunk.pt"
    torch.save(reference.state_dict(), path)
    loaded = build_backbone(name, weights=str(path), kwargs=kwargs)
    key, value = next((k, v) for k, v in reference.state_dict().items() if v.dtype.is_floating_point and v.ndim > 1)
    assert torch.equal(loaded.trunk.state_dict()[key], value)
    assert not torch.equal(build_backbone(name, kwargs=kwargs).trunk.state_dict()[key], value)
    # a whole Backbone (trunk + attention gate), and the same as .safetensors
    torch.save(loaded.state_dict(), tmp_path / "backbone.pt")
    again = build_backbone(name, weights=str(tmp_path / "backbone.pt"), kwargs=kwargs)
    assert torch.equal(again.attention.fc.weight, loaded.attention.fc.weight)
    from safetensors.torch import save_file

    save_file(reference.state_dict(), tmp_path / "trunk.safetensors")
    from_safetensors = build_backbone(name, weights=str(tmp_path / "trunk.safetensors"), kwargs=kwargs)
    assert torch.equal(from_safetensors.trunk.state_dict()[key], value)


def test_timm_weights_of_another_model_do_not_fit(tmp_path):
    path = tmp_path / "convnext.pt"
    torch.save(timm.create_model("convnext_atto").state_dict(), path)
    with pytest.raises(FERError, match="do not fit"):
        build_backbone("timm/mobilenetv3_small_050", weights=str(path))


def test_timm_imagenet_offline_says_where_timm_looks(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(FERError) as err:
        build_backbone("timm/convnext_atto", weights="imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "timm/convnext_atto" in msg and "model.backbone.weights=null" in msg
    assert str(tmp_path / "hf-cache") in msg and "convnext_atto.d2_in1k" in msg


def test_timm_imagenet_with_the_hub_unreachable_fails_at_once_without_offline_mode(monkeypatch, tmp_path, caplog):
    """No HF_HUB_OFFLINE: the Hub's endpoint refuses connections, and the error comes without the hub's retries."""
    import logging
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:  # a local port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with caplog.at_level(logging.WARNING, logger="huggingface_hub"), pytest.raises(FERError) as err:
        build_backbone("timm/convnext_atto", weights="imagenet")
    assert not [r for r in caplog.records if "Retry" in r.getMessage()], "the hub retried instead of failing at once"
    assert "model.backbone.weights=null" in str(err.value) and "\n" not in str(err.value)
    assert constants.HF_HUB_OFFLINE is False  # offline mode was only for the attempt


def test_unknown_names_and_bad_kwargs_are_one_line_errors():
    with pytest.raises(FERError) as err:
        build_backbone("timm/convnext_atoo")
    msg = str(err.value)
    assert "\n" not in msg and "convnext_atto" in msg and "timm.list_models('convnext*')" in msg
    with pytest.raises(FERError, match="unknown backbone"):
        build_backbone("convnext_atto")  # timm models need the timm/ prefix
    with pytest.raises(FERError, match="only timm/ backbones take kwargs"):
        build_backbone("resnet18", kwargs={"img_size": 32})
    with pytest.raises(FERError, match=r"model.backbone.kwargs=\{'img_size': 32\}"):
        build_backbone("timm/convnext_atto", kwargs={"img_size": 32})


def test_a_vit_fed_another_size_says_how_to_fix_it():
    vit = build_backbone("timm/vit_tiny_patch16_224")
    with pytest.raises(FERError, match=r"takes 224x224 images, not 32x32.*kwargs=\{img_size:32\}"):
        vit(_x())


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_branches_may_use_different_backbones(fusion):
    model = FusionModule(
        {"name": "timm/vit_tiny_patch16_224", "attention": "gate", "kwargs": {"img_size": 32}},
        {"hidden": 8},
        fusion=fusion,
        # another model: the visible branch's timm kwargs are not passed on to it
        infrared_backbone={"name": "timm/mobilenetv3_small_050"},
        num_classes=3,
    ).eval()
    visible, infrared = model.backbones["visible"], model.backbones["infrared"]
    # 192 (ViT) vs 1024 (MobileNetV3): the narrower branch is projected to the wider one's width
    assert isinstance(visible.projection, nn.Linear) and isinstance(infrared.projection, nn.Identity)
    assert visible.out_features == infrared.out_features == 1024
    if fusion in ("interleave", "concat", "sum"):
        assert model.head[1].in_features == (1024 if fusion == "sum" else 2048)
    with torch.no_grad():
        assert model({"visible": _x(), "infrared": _x()}).shape == (2, 3)


def test_another_infrared_family_takes_imagenet_but_not_the_visible_weights_file(tmp_path, monkeypatch):
    import fer_lightning.models.networks as networks

    built = []
    monkeypatch.setattr(networks, "build_backbone", lambda **kw: built.append(kw) or build_backbone(**kw))
    path = tmp_path / "resnet18.pt"
    torch.save(build_backbone("resnet18").trunk.state_dict(), path)
    FusionModule(
        {"name": "resnet18", "weights": str(path)},
        {"hidden": 8},
        num_classes=3,
        infrared_backbone={"name": "timm/mobilenetv3_small_050", "weights": None},
    )
    assert built[0]["weights"] == str(path) and "weights" not in built[1]  # random init, not a misfit file
    built.clear()
    FusionModule(
        {"name": "resnet18", "weights": str(path)},
        {"hidden": 8},
        num_classes=3,
        infrared_backbone={"name": "resnet18", "attention": "gate_sq"},
    )
    assert built[1]["weights"] == str(path) and built[1]["attention"] == "gate_sq"  # same family: inherited


def test_the_infrared_backbone_is_set_on_the_command_line_without_a_plus(tmp_path, data_dir):
    from fer_lightning.runs import build_model

    cfg = compose_cfg(
        [*TINY, "modality=fusion", "model.infrared_backbone.name=timm/mobilenetv3_small_050"],
        tmp_path / "run",
        data_dir,
    )
    model = build_model(cfg.model, ["a", "b", "c"])
    assert model.backbones["infrared"].name == "timm/mobilenetv3_small_050"
    assert model.backbones["visible"].name == cfg.model.backbone.name


def test_equal_widths_get_no_projection():
    model = FusionModule({"name": "resnet18"}, {"hidden": 8}, infrared_backbone={"name": "resnet34"}, num_classes=3)
    assert all(isinstance(b.projection, nn.Identity) for b in model.backbones.values())
