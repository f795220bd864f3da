"""Backbones by name through training runs: timm families, Grad-CAM on a timm CNN, a backbone registered in a test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fer_lightning.models import backbones
from fer_lightning.models.backbones import (
    Backbone,
    register_backbone,
)
from tests.conftest import TINY, compose_cfg
from tests.helpers.settings import TIMM


def _timm_overrides(name: str) -> list[str]:
    kwargs = ",".join(f"{k}:{v}" for k, v in TIMM[name].items())
    return [f"model.backbone.name={name}", f"model.backbone.kwargs={{{kwargs}}}"]


@pytest.mark.parametrize("modality", ["visible", "fusion"])
@pytest.mark.parametrize("name", TIMM)
def test_timm_backbones_train_debug_fast(name, modality, tmp_path, data_dir):
    from fer_lightning.runs import train_and_test

    run = tmp_path / "run"
    cfg = compose_cfg([*TINY, f"modality={modality}", "debug=fast", *_timm_overrides(name)], run, data_dir)
    _, fitted = train_and_test(cfg)
    results = json.loads((run / "results.json").read_text())
    assert results["modality"] == modality and results["test"]["n"] == 15
    assert all(b.name == name for b in fitted.model.backbones.values())


def test_explain_draws_heat_maps_for_a_timm_cnn(tmp_path, data_dir):
    from fer_lightning.analysis.cam import explain
    from fer_lightning.runs import train_and_test
    from tests.helpers.eval_runs import compose_app, save_run_config

    run = tmp_path / "run"
    overrides = [*TINY, "logger=none", "modality=fusion", "trainer.max_epochs=1", "+trainer.limit_train_batches=1"]
    cfg = compose_cfg([*overrides, *_timm_overrides("timm/mobilenetv3_small_050")], run, data_dir)
    train_and_test(cfg)
    save_run_config(cfg, run)
    vis = next((data_dir / "synthetic" / "visible").rglob("*.png"))
    ir = data_dir / "synthetic" / "infrared" / vis.relative_to(data_dir / "synthetic" / "visible")
    args = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"visible={vis}", f"infrared={ir}"]
    result = explain(compose_app("explain", args, tmp_path / "out"))
    for m in ("visible", "infrared"):
        overlay = np.asarray(Image.open(result["heatmaps"][m]).convert("RGB"), dtype=np.int16)
        original = np.asarray(Image.open(vis if m == "visible" else ir).convert("RGB"), dtype=np.int16)
        assert overlay.shape == original.shape and np.abs(overlay - original).mean() > 1


class TinyCNN(Backbone):
    """A toy family: one strided convolution is the last stage, its spatial mean the pooled feature."""

    def __init__(self, attention: str):
        super().__init__("toy_cnn", nn.Conv2d(3, 16, 3, stride=2), pooled=16, map_channels=16, attention=attention)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.trunk(x))

    def global_pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean((2, 3))

    def cam_target(self):
        return self.trunk, None


@pytest.mark.parametrize("modality", ["infrared", "fusion"])
def test_a_backbone_registered_in_a_test_trains_by_name(modality, tmp_path, data_dir, monkeypatch):
    """One Backbone subclass and its registration: every model, single-camera and fused, builds it by name."""
    from fer_lightning.runs import train_and_test

    monkeypatch.setattr(backbones, "_BUILDERS", dict(backbones._BUILDERS))  # the toy leaves with the test
    register_backbone("toy_cnn")(lambda attention, imagenet: TinyCNN(attention))
    overrides = [*TINY, f"modality={modality}", "debug=fast", "model.backbone.name=toy_cnn"]
    results, fitted = train_and_test(compose_cfg(overrides, tmp_path / "run", data_dir))
    assert results["modality"] == modality and results["test"]["n"] == 15
    assert all(isinstance(b, TinyCNN) and b.out_features == 16 for b in fitted.model.backbones.values())
