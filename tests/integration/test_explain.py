"""explain: one Grad-CAM overlay per branch, the size of its input image."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fer_lightning.analysis.cam import explain
from fer_lightning.errors import FERError
from tests.helpers.eval_runs import compose_app, tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    return tiny_run(tmp_path_factory, data_dir)


def _explain(run_dir: Path, out: Path, *extra: str) -> dict:
    return explain(compose_app("explain", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *extra], out))


def test_fusion_model_gets_a_heat_map_per_branch_at_input_size(run_dir, data_dir, tmp_path):
    root = data_dir / "synthetic"
    # inputs of different, non-square sizes: each overlay must come back at its own input's size
    sizes = {"visible": (57, 45), "infrared": (30, 52)}
    inputs = {}
    for m, size in sizes.items():
        src = next((root / m / "Happy").glob("*.png"))
        inputs[m] = tmp_path / f"face_{m}.png"
        Image.open(src).resize(size).save(inputs[m])
    result = _explain(run_dir, tmp_path / "out", *(f"{m}={p}" for m, p in inputs.items()))
    assert set(result["heatmaps"]) == {"visible", "infrared"}
    for m, path in result["heatmaps"].items():
        img = Image.open(path)
        assert img.size == sizes[m] and img.mode == "RGB"
        # an overlay, not a copy of the input
        assert img.tobytes() != Image.open(inputs[m]).convert("RGB").tobytes()
    assert result["explained_class"] == result["prediction"] and "label" not in result


def test_target_class_and_inputs_are_checked(run_dir, data_dir, tmp_path):
    root = data_dir / "synthetic"
    vis = next((root / "visible").rglob("*.png"))
    ir = root / "infrared" / vis.relative_to(root / "visible")
    result = _explain(run_dir, tmp_path, f"visible={vis}", f"infrared={ir}", "target=Sad")
    assert result["explained_class"] == "Sad"
    with pytest.raises(FERError, match="target=Bored"):
        _explain(run_dir, tmp_path, f"visible={vis}", f"infrared={ir}", "target=Bored")
    with pytest.raises(FERError, match="missing visible"):
        _explain(run_dir, tmp_path, f"infrared={ir}")
