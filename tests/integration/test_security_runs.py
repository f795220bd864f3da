"""Crafted checkpoints and run configs against the commands and a trained run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fer_lightning.analysis.cam import explain
from fer_lightning.app import report_errors
from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.predict import predict
from fer_lightning.runs import load_run_checkpoint
from fer_lightning.runs.instantiate import model_from_checkpoint
from fer_lightning.runs.robustness import robustness_grid
from fer_lightning.runs.trust import untrusted
from tests.conftest import REPO
from tests.helpers.eval_runs import compose_app, tiny_run

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


def _copy(source: Path, marker: Path) -> dict:
    return {"_target_": "shutil.copyfile", "_args_": [str(source), str(marker)]}


# Where an edited config hides the call: the key, two levels inside a model setting, a _partial_ node in a
# list (built, never called, by the datamodule), and a resolver that builds the node from a string at resolution.
CRAFTED = {
    "model.evil": lambda cfg, call: OmegaConf.update(cfg, "model.evil", call, force_add=True),
    "model.backbone.kwargs.x.y": lambda cfg, call: OmegaConf.update(
        cfg, "model.backbone.kwargs", {"x": {"y": call}}, force_add=True
    ),
    "augment.photometric[1]": lambda cfg, call: cfg.augment.photometric.append({**call, "_partial_": True}),
    "oc.create": lambda cfg, call: OmegaConf.update(cfg, "model.evil", _as_interpolation(call), force_add=True),
}


def _as_interpolation(call: dict) -> str:
    args = ",".join(f"'{a}'" for a in call["_args_"])
    return f"${{oc.create:{{_target_:{call['_target_']},_args_:[{args}]}}}}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    return tiny_run(tmp_path_factory, data_dir)


def _crafted_run(trained: Path, tmp_path: Path, case: str) -> tuple[Path, Path]:
    """A copy of a real trained run whose config was edited to copy a file; returns (checkpoint, marker)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained / ".hydra", run_dir / ".hydra")
    shutil.copytree(trained / "checkpoints", run_dir / "checkpoints")
    source, marker = tmp_path / "source.txt", tmp_path / "marker.txt"
    source.write_text("secret")
    config_path = run_dir / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_path)
    CRAFTED[case](cfg, _copy(source, marker))
    OmegaConf.save(cfg, config_path)
    return run_dir / "checkpoints" / "last.ckpt", marker


COMMANDS = {
    "evaluate": ("eval", evaluate, []),
    "predict": ("predict", predict, ["visible=v.png", "infrared=i.png"]),
    "explain": ("explain", explain, ["visible=v.png", "infrared=i.png"]),
    "robustness": ("robustness", robustness_grid, ["kinds=[noise]", "severities=[1]"]),
}


@pytest.mark.parametrize("case", list(CRAFTED))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_crafted_run_config_instantiates_nothing(trained, tmp_path, capsys, case, command):
    ckpt, marker = _crafted_run(trained, tmp_path, case)
    config_name, run, extra = COMMANDS[command]
    cfg = compose_app(config_name, [f"ckpt_path={ckpt}", *extra], tmp_path / "out")
    with pytest.raises(SystemExit) as exc:
        report_errors(run)(cfg)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {ckpt.parent.parent / '.hydra' / 'config.yaml'}: "), lines
    assert "restore the run's config" in lines[0] and ("shutil.copyfile" in lines[0] or "oc.create" in lines[0])
    assert case.split("[")[0] in lines[0] or case == "oc.create"
    assert not marker.exists()
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow
def test_cli_refuses_a_crafted_run_config_in_one_line(trained, tmp_path):
    ckpt, marker = _crafted_run(trained, tmp_path, "model.backbone.kwargs.x.y")
    args = [f"ckpt_path={ckpt}", *_IMAGES, f"hydra.run.dir={tmp_path / 'out'}"]
    command = [sys.executable, "-m", "fer_lightning.predict", *args]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {ckpt.parent.parent / '.hydra' / 'config.yaml'}: model.backbone.kwargs.x.y names shutil.copyfile, "
        "which is not a fer-lightning component; restore the run's config"
    ]
    assert not marker.exists()


def test_a_stored_run_config_passes_and_its_model_comes_from_the_checkpoint(trained):
    run = load_run_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert untrusted(OmegaConf.to_container(run.config, resolve=False)) is None
    model = model_from_checkpoint(run)
    assert model.fusion == run.hyper_parameters["fusion"] and model.class_names == run.classes


def test_model_settings_in_the_checkpoint_are_checked_too(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained / ".hydra", copy / ".hydra")
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["backbone"]["kwargs"] = {"x": {"_target_": "builtins.open"}}
    (copy / "checkpoints").mkdir()
    torch.save(ckpt, copy / "checkpoints" / "last.ckpt")
    with pytest.raises(FERError, match=r"hyper_parameters.backbone.kwargs.x names builtins.open") as exc:
        load_run_checkpoint(copy / "checkpoints" / "last.ckpt")
    assert "\n" not in str(exc.value)
