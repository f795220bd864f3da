"""Untrusted checkpoints never run code: a crafted pickle is refused, in one line, by every path that loads one."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from fer_lightning.analysis.cam import explain
from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.models.backbones import build_backbone
from fer_lightning.predict import predict
from fer_lightning.runs import build_model
from tests.conftest import REPO, compose_cfg
from tests.eval_runs import compose_app, save_run_config


class _Payload:
    """Unpickling this calls os.system: what a malicious .ckpt does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """A run dir (a real config) whose checkpoint is a pickle that would create ``marker``."""
    run_dir = tmp_path / "run"
    save_run_config(compose_cfg(["modality=fusion"], run_dir), run_dir)
    ckpt = run_dir / "checkpoints" / "evil.ckpt"
    ckpt.parent.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    with open(ckpt, "wb") as f:
        pickle.dump({"state_dict": {"x": _Payload(marker)}, "epoch": 0}, f)
    # the payload really runs when loaded unsafely, so "no marker" below means the loader refused it
    with open(ckpt, "rb") as f:
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    return ckpt, marker


def _refused(call, marker: Path) -> None:
    with pytest.raises(FERError, match="not a fer-lightning checkpoint, or not a safe one") as exc:
        call()
    assert "\n" not in str(exc.value)
    assert not marker.exists()


def test_evaluate_predict_explain_refuse_a_crafted_checkpoint(evil, tmp_path):
    ckpt, marker = evil
    images = {"visible": str(tmp_path / "v.png"), "infrared": str(tmp_path / "i.png")}
    _refused(lambda: evaluate(compose_app("eval", [f"ckpt_path={ckpt}"], tmp_path / "e")), marker)
    args = [f"ckpt_path={ckpt}", *(f"{k}={v}" for k, v in images.items())]
    _refused(lambda: predict(compose_app("predict", args, tmp_path / "p")), marker)
    _refused(lambda: explain(compose_app("explain", args, tmp_path / "x")), marker)


def test_infrared_init_refuses_a_crafted_checkpoint(evil, tmp_path):
    ckpt, marker = evil
    cfg = compose_cfg(["modality=fusion", f"model.infrared_init={ckpt}"], tmp_path)
    _refused(lambda: build_model(cfg.model, ["a", "b"]), marker)


def test_backbone_weights_refuse_a_crafted_pickle(evil, tmp_path):
    ckpt, marker = evil
    with pytest.raises(FERError, match="not a fer-lightning checkpoint, or not a safe one") as exc:
        build_backbone("resnet18", weights=str(ckpt))
    assert str(exc.value).startswith(f"model.backbone.weights={ckpt}") and "\n" not in str(exc.value)
    assert not marker.exists()


_IMAGES = ["visible=v.png", "infrared=i.png"]  # not read: the checkpoint is refused first


@pytest.mark.parametrize(
    ("command", "extra"),
    [("evaluate", []), ("train", ["debug=fast"]), ("predict", _IMAGES), ("explain", _IMAGES)],
)
def test_cli_exits_2_with_one_line_and_runs_nothing(evil, tmp_path, command, extra):
    ckpt, marker = evil
    args = [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'out'}", *extra]
    if command == "train":  # resuming from it: the run dir and data must not matter
        args += [f"paths.data_dir={tmp_path / 'data'}", "dataset.generator.n_subjects=6", "dataset.image_size=32"]
    proc = subprocess.run(
        [sys.executable, "-m", f"fer_lightning.{command}", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path=") and "not a safe one" in lines[0], lines
    assert not marker.exists()
