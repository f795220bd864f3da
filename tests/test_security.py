"""Untrusted checkpoints and run configs never run code: a crafted pickle, or a run config naming anything but
fer-lightning's own components, is refused in one line by every path that loads one."""

from __future__ import annotations

import importlib
import os
import pickle
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
from fer_lightning.models.backbones import build_backbone
from fer_lightning.predict import predict
from fer_lightning.runs import build_model, load_run_checkpoint
from fer_lightning.runs.instantiate import build_datamodule, model_from_checkpoint
from fer_lightning.runs.robustness import robustness_grid
from fer_lightning.runs.trust import COMPONENTS, MOVED, is_component, untrusted
from tests.conftest import REPO, compose_cfg
from tests.helpers.eval_runs import compose_app, save_run_config, tiny_run


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


# -- a run dir's .hydra/config.yaml never instantiates what it likes ---------------------------------------------


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


def _conf_files() -> list[Path]:
    # Hydra's own node (conf/hydra/) is never stored in a run's config.yaml
    return [p for p in sorted((REPO / "conf").rglob("*.yaml")) if "hydra" not in p.relative_to(REPO / "conf").parts]


def _targets(node) -> set[str]:
    if isinstance(node, dict):
        return {node.get("_target_")} - {None} | {t for v in node.values() for t in _targets(v)}
    return {t for v in node for t in _targets(v)} if isinstance(node, list) else set()


def test_every_component_and_resolver_the_configs_use_is_allowed():
    targets = set()
    for path in _conf_files():
        container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if isinstance(container, dict):
            container.pop("hydra", None)
        assert untrusted(container) is None, path
        targets |= _targets(container)
    # what the project ships: the LightningModules, datamodules, Trainer, optimiser and scheduler, augmentations
    assert {"fer_lightning.models.lightning.FusionModule", "lightning.pytorch.Trainer", "torch.optim.Adam"} <= targets
    assert all(is_component(t) for t in targets)


def test_a_stored_run_config_passes_and_its_model_comes_from_the_checkpoint(trained):
    run = load_run_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert untrusted(OmegaConf.to_container(run.config, resolve=False)) is None
    model = model_from_checkpoint(run)
    assert model.fusion == run.hyper_parameters["fusion"] and model.class_names == run.classes


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("torch.optim.SGD", True),
        ("torch.optim.lr_scheduler.StepLR", True),
        ("albumentations.GaussianBlur", True),
        ("albumentations.OneOf", True),
        ("builtins.open", False),
        # run dirs saved before the LightningModules moved to models/lightning.py
        ("fer_lightning.models.modules.FusionModule", True),
        ("numpy.save", False),
        ("os.system", False),
        ("torch.save", False),
        ("torch.optim.Optimizer.zero_grad", False),
        ("albumentations.save", False),
        ("fer_lightning.io.atomic_write_text", False),
        ("${oc.env:TARGET}", False),
        (["torch.optim.SGD"], False),
    ],
)
def test_only_project_components_are_allowed(target, allowed):
    assert is_component(target) is allowed


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_target_from_before_a_rename_is_allowed_and_names_a_class_that_exists(old):
    new = MOVED[old]
    module, _, name = new.rpartition(".")
    assert is_component(old) and old not in COMPONENTS and new in COMPONENTS
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_a_stored_dataset_config_naming_the_old_module_still_builds(tmp_path):
    cfg = compose_cfg([], tmp_path)
    cfg.dataset._target_ = "fer_lightning.data.datamodules.SyntheticDataModule"
    assert type(build_datamodule(cfg.dataset, read_only=True)).__name__ == "SyntheticDataModule"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": "${oc.decode:'{_target_: os.system}'}"}, "a uses ${oc.decode:...}"),
        ({"a": ["${oc.env:X,${oc.create:{}}}"]}, "a[0] uses ${oc.create:...}"),
        ({"a": "${hydra:launcher}"}, "a reads ${hydra:launcher}"),
        ({"a": [{"b": {"_target_": "builtins.open", "_partial_": True}}]}, "a[0].b names builtins.open"),
        ({"a": "${hydra:runtime.output_dir}/x", "b": "\\${oc.create:1}", "c": "${a}"}, None),
    ],
)
def test_untrusted_names_the_key(value, problem):
    found = untrusted(value)
    assert (found is None) if problem is None else found.startswith(problem), found


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


@pytest.mark.parametrize("data", [b"a" * 8, b"\x80\x02K", b"J\x00\x00", b"0" * 8], ids=["append", "byte", "int", "pop"])
def test_bytes_that_crash_the_unpickler_are_one_line(tmp_path, data):
    """Opcodes on an empty stack or cut short make torch's weights-only unpickler raise IndexError or struct.error,
    not its own error: such bytes as ckpt_path= must still end as one line (test_errors' random checkpoint, 4096
    random bytes, hit it now and then)."""
    from fer_lightning.io import load_tensors

    path = tmp_path / "x.ckpt"
    path.write_bytes(data)
    with pytest.raises(FERError, match=r"^ckpt_path=.*x\.ckpt: not a readable checkpoint"):
        load_tensors(path, "ckpt_path")
