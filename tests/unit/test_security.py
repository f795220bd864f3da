"""Untrusted checkpoints and run configs never run code: a crafted pickle, or a run config naming anything but
fer-lightning's own components, is refused in one line by every path that loads one."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fer_lightning.analysis.cam import explain
from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.models.backbones import build_backbone
from fer_lightning.predict import predict
from fer_lightning.runs import build_model
from fer_lightning.runs.instantiate import build_datamodule
from fer_lightning.runs.trust import COMPONENTS, MOVED, is_component, untrusted
from tests.conftest import REPO, compose_cfg
from tests.helpers.eval_runs import compose_app


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


# -- a run dir's .hydra/config.yaml never instantiates what it likes ---------------------------------------------


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
