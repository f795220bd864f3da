"""``python -m fer_lightning.bench`` with tiny settings: it runs both pipelines and ends with one JSON line."""

from __future__ import annotations

import json

import pytest
import torch

from fer_lightning import bench

REQUIRED = (
    "device",
    "image_size",
    "batch_size",
    "modality",
    "framework_img_s",
    "study_style_img_s",
    "ratio",
    "loader_img_s",
    "protocol_s",
    "protocol_how",
    "study_style_protocol_s",
)
TINY = [
    "--device",
    "cpu",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--pairs",
    "24",
    "--unique",
    "5",
    "--epochs",
    "1",
]


@pytest.mark.parametrize("modality", ["visible", pytest.param("fusion", marks=pytest.mark.slow)])
def test_bench_prints_table_then_json(tmp_path, capsys, modality):
    assert bench.main([*TINY, "--modality", modality, "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert all(k in result for k in REQUIRED)
    assert result["device"] == "cpu" and result["modality"] == modality and result["image_size"] == 32
    assert result["unit"] == ("pairs/s" if modality == "fusion" else "img/s")
    for key in ("framework_img_s", "study_style_img_s", "loader_img_s", "protocol_s"):
        assert result[key] > 0
    # (rates are rounded to 0.1 before printing, and tiny runs are slow)
    assert result["ratio"] == pytest.approx(result["framework_img_s"] / result["study_style_img_s"], rel=0.15)
    assert result["protocol_how"] == "extrapolated"
    assert any(line.startswith("| ratio |") for line in lines)
    # The study-style files really are 640x480 JPEGs beside the framework's cache.
    from PIL import Image

    jpg = next((tmp_path / "bench" / "images").rglob("*.jpg"))
    assert Image.open(jpg).size == (640, 480)
    assert any((tmp_path / "bench" / "cache").glob("*.npy"))


@pytest.mark.parametrize(
    ("backbone", "overrides", "kwargs"),
    [
        ("timm/mobilenetv3_small_050", [], {}),
        pytest.param(
            "timm/vit_tiny_patch16_224",
            ["model.backbone.kwargs={img_size:32}"],
            {"img_size": 32},
            marks=pytest.mark.slow,
        ),
    ],
)
def test_bench_measures_a_timm_backbone_beside_the_study_style_run(tmp_path, capsys, backbone, overrides, kwargs):
    import timm

    assert bench.main([*TINY, "--backbone", backbone, "--data-dir", str(tmp_path), *overrides]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["backbone"] == backbone and result["overrides"] == overrides
    # the backbone's own parameters: the timm trunk plus the attention gate Linear(d, d), not the head's
    trunk = timm.create_model(backbone.removeprefix("timm/"), num_classes=0, **kwargs).eval()
    d = trunk(torch.rand(1, 3, 32, 32)).shape[1]
    assert result["backbone_params"] == sum(p.numel() for p in trunk.parameters()) + d * d + d
    assert result["framework_img_s"] > 0 and result["study_style_img_s"] > 0
    assert result["ratio"] == pytest.approx(result["framework_img_s"] / result["study_style_img_s"], rel=0.15)


def test_bench_rejects_bad_arguments(capsys):
    assert bench.main(["--device", "cpu", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert bench.main([*TINY, "--pairs", "10", "model.no_such_key=1"]) == 2
    assert "model.no_such_key" in capsys.readouterr().err
    assert bench.main([*TINY, "--pairs", "10", "--backbone", "timm/resnet_nope"]) == 2
    assert "timm.list_models('resnet*')" in capsys.readouterr().err


def test_bench_times_a_real_training_run_and_its_wait_for_data(tmp_path, capsys):
    args = [*TINY, "--pairs", "30", "--skip-study", "--run-steps", "8", "--passes", "2", "--data-dir", str(tmp_path)]
    assert bench.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["passes_per_epoch"] == 2 and result["run_steps"] >= 8
    assert 0 < result["data_wait_s"] < result["run_wall_s"]
    assert result["data_wait_fraction"] == pytest.approx(result["data_wait_s"] / result["run_wall_s"], abs=0.01)
    assert result["model_only_img_s"] > 0
    assert any(line.startswith("| real training run: ") for line in lines)
    # it trained as train does: checkpoints written
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert bench.main([*TINY, "--run-steps", "-1"]) == 2 and "--run-steps" in capsys.readouterr().err
