"""The paper_* presets reproduce the study's recipe; the ours_* presets differ from it only where documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from fer_lightning.runs import build_model
from fer_lightning.runs.config import check_run_config
from tests.conftest import CONF, REPO, compose_cfg
from tests.helpers.study import STUDY_HEADS, describe

DATASETS = {"viri": ["Angry", "Happy", "Neutral", "Sad", "Surprise"], "nvie": ["fear", "disgust", "happy"]}
MODALITIES = ("visible", "infrared", "fusion")
PRESETS = [(family, ds, mod) for family in ("paper", "ours") for ds in DATASETS for mod in MODALITIES]


def preset(family: str, ds: str, mod: str, tmp_path: Path):
    cfg = compose_cfg([f"experiment={family}_{ds}_{mod}"], tmp_path)
    with open_dict(cfg):
        weights = cfg.model.backbone.weights
        cfg.model.backbone.weights = None  # no download in tests; the configured value is checked separately
    return cfg, weights


def test_every_preset_file_is_tested():
    assert sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")) == sorted(f"{f}_{d}_{m}" for f, d, m in PRESETS)


def _task(overrides: list[str], tmp_path: Path) -> dict:
    """The composed train config without Hydra's own node (its runtime choices name the experiment)."""
    cfg = compose_cfg(overrides, tmp_path)
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_an_experiment_is_an_alias_of_the_groups_it_selects(name, tmp_path):
    """experiment=<recipe>_<dataset>_<modality> selects groups and sets nothing: the same run as the three choices."""
    assert list(OmegaConf.load(CONF / "experiment" / f"{name}.yaml")) == ["defaults"]
    recipe, dataset, modality = name.split("_")
    spelled = [f"recipe={recipe}", f"dataset={dataset}", f"modality={modality}"]
    assert _task([f"experiment={name}"], tmp_path) == _task(spelled, tmp_path)


@pytest.mark.parametrize(("family", "ds", "mod"), PRESETS)
def test_preset_composes_to_the_study_model(family, ds, mod, tmp_path):
    cfg, weights = preset(family, ds, mod, tmp_path)
    classes = DATASETS[ds]
    assert (cfg.dataset.name, cfg.modality, cfg.dataset.modality) == (ds, mod, mod)
    assert weights == "imagenet" and cfg.dataset.image_size == 224 and cfg.dataset.batch_size == 64
    # the study's double softmax: both recipes keep it (the small-data measurement, docs/benchmarks.md#small-data)
    assert cfg.model.softmax_before_loss is True
    model = build_model(cfg.model, classes)
    branches = ["visible", "infrared"] if mod == "fusion" else [mod]
    assert sorted(model.backbones) == sorted(branches)
    expected_head = STUDY_HEADS[mod]
    if family == "ours" and mod == "fusion":
        # ours drops the dropout on the logits, and its gated fusion feeds the head one 512-d weighted feature
        expected_head = [("Dropout", 0.2), ("Linear", 512, 256), *expected_head[2:-1]]
    assert describe(model.head, len(classes)) == expected_head
    gates = {m: type(model.backbones[m].attention).__name__ for m in branches}
    assert set(gates.values()) == {"FeatureGate"}
    squared = {m: model.backbones[m].attention.square for m in branches}
    # the study's fusion script gated its infrared branch on x*x; ours gates both on x
    assert squared == {m: family == "paper" and mod == "fusion" and m == "infrared" for m in branches}
    if mod == "fusion":
        assert model.fusion == ("interleave" if family == "paper" else "gated")
        # the study trained both branches on every sample
        assert model.modality_dropout == (0.0 if family == "paper" else 0.3)
    logits = model.eval()({m: torch.zeros(2, 3, 32, 32) for m in branches})
    assert logits.shape == (2, len(classes))


@pytest.mark.parametrize(("ds", "mod"), [(d, m) for d in DATASETS for m in MODALITIES])
def test_paper_preset_training_recipe(ds, mod, tmp_path):
    cfg, _ = preset("paper", ds, mod, tmp_path)
    model = build_model(cfg.model, DATASETS[ds])
    optimizer, scheduler = unpack(model.configure_optimizers())
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 1e-3
    assert type(scheduler["scheduler"]) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert scheduler["interval"] == "epoch"
    # T_max=3 epochs: the rate reaches 0 after 3 epochs and is back at 1e-3 after 6
    lrs = []
    for _ in range(6):
        optimizer.step()
        scheduler["scheduler"].step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[2] == pytest.approx(0, abs=1e-12) and lrs[5] == pytest.approx(1e-3)


def test_the_paper_preset_trains_with_the_study_double_softmax(tmp_path):
    cfg, _ = preset("paper", "viri", "visible", tmp_path)
    logits, labels = torch.tensor([[4.0, 0.0, 0.0, 0.0, 0.0]]), torch.tensor([0])
    double = build_model(cfg.model, DATASETS["viri"]).loss(logits, labels)
    with open_dict(cfg):
        cfg.model.softmax_before_loss = False
    plain = build_model(cfg.model, DATASETS["viri"]).loss(logits, labels)
    assert plain == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    # softmax twice squashes a confident prediction's loss towards log(C)-ish values
    assert double.item() > plain.item() + 0.5


def unpack(configured):
    return configured["optimizer"], configured["lr_scheduler"]


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def test_optuna_search_and_slurm_launcher_compose(tmp_path):
    cfg = compose_cfg(["hparams_search=optuna", "experiment=ours_viri_visible"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_.lower() and sweeper.direction == "maximize"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, f"{key} is not a config key"
    sampler = instantiate(sweeper.sampler)
    assert type(sampler).__name__ == "TPESampler"
    launcher = compose_cfg(["hydra/launcher=slurm"], tmp_path).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node, launcher.timeout_min) == (1, 1, 1, 240)
    # a timed-out job is requeued and resumes (callbacks.preemption), so requeues are allowed
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0
    # one task per GPU on every node, as Lightning's SLURM environment expects
    many = compose_cfg(["hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2"], tmp_path).hydra.launcher
    assert (many.nodes, many.gpus_per_node, many.tasks_per_node) == (2, 4, 4)


# The study's recipe as published (docs/study.md, "The study's recipe"; docs/recipes.md, "paper"), written out here
# rather than read from conf/, so a config change that departs from the study fails. Its model is checked layer by
# layer above (STUDY_HEADS) and its optimiser and schedule by what they do (test_paper_preset_training_recipe).
STUDY_RECIPE = {
    "model.backbone.name": "resnet18",
    "model.backbone.weights": "imagenet",
    "model.backbone.attention": "gate",
    "model.optimizer._target_": "torch.optim.Adam",
    "model.optimizer.lr": 1e-3,
    "model.scheduler._target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
    "model.scheduler.T_max": 3,
    "model.softmax_before_loss": True,
    "model.mixup_alpha": 0.0,
    "dataset.image_size": 224,
    "dataset.batch_size": 64,
    "dataset.eval_batch_size": 8,
    "dataset.normalization": "none",
    "augment.offline_copies": 26,
    "trainer.max_epochs": 50,
    "trainer.check_val_every_n_epoch": 1,
    "budget.steps": None,
    "budget.val_checks": None,
    "callbacks.model_checkpoint.monitor": "val/accuracy",
    "callbacks.model_checkpoint.mode": "max",
    "callbacks.model_checkpoint.test_checkpoint": "best",
    "callbacks.model_checkpoint.tie_break": "later",
    "faces.mode": "none",  # the whole frame, as the study fed it
}
STUDY_FUSION = {
    "trainer.max_epochs": 150,
    "model.fusion": "interleave",
    "model.aux_loss_weight": 0.0,
    "model.modality_dropout": 0.0,
    "model.infrared_backbone.attention": "gate_sq",
    "model.infrared_init": None,
}
# The study's five transforms, one per copy (docs/study.md): rotation ±20°, zoom-out onto a canvas up to 1.5x filled
# with 123, perspective 0.5, affine with rotation ±20° and shear 0.2, horizontal flip.
STUDY_TRANSFORMS = [
    ("albumentations.Rotate", {"limit": [-20, 20]}),
    ("albumentations.Affine", {"scale": [1 / 1.5, 1.0], "fill": 123}),
    ("fer_lightning.data.transforms.TorchvisionPerspective", {"distortion_scale": 0.5}),
    ("albumentations.Affine", {"rotate": [-20, 20], "shear.x": [-0.2, 0.2], "shear.y": [0, 0]}),
    ("albumentations.HorizontalFlip", {}),
]
# What `ours` changes, by the number of its reason in docs/recipes.md ("ours: the recommended recipe"); the reasons
# marked fusion change the fusion presets only. 8 (the double softmax kept) changes nothing.
OURS_CHANGES = {
    1: {"model.scheduler.T_max"},
    2: {"dataset.normalization"},
    3: {"augment.offline_copies", "dataset.augment.offline_copies"},
    4: {"model.infrared_backbone.attention"},
    5: {"model.head.dropout_out"},
    6: {"model.modality_dropout"},
    7: {"budget.steps", "budget.val_checks", "trainer.max_epochs"},
    8: set(),
    9: {"model.fusion", "model.aux_loss_weight"},
    10: {"model.mixup_alpha"},
    11: {"callbacks.model_checkpoint.test_checkpoint"},
}
FUSION_ONLY = {4, 5, 6, 9}
# the study's validation batch (docs/recipes.md, "paper"), no effect on the numbers: ours leaves the default
PAPER_ONLY = {"dataset.eval_batch_size"}


def resolved(overrides: list[str], tmp_path: Path) -> dict:
    """The composed train config, resolved, as flat ``key -> value`` (without Hydra's node and the tags)."""
    cfg = compose_cfg(overrides, tmp_path)
    with open_dict(cfg):
        del cfg["hydra"]
    task = OmegaConf.to_container(cfg, resolve=True)
    task.pop("tags")
    task["logger"]["wandb"].pop("tags")
    return dict(_flatten(task))


@pytest.mark.parametrize(("ds", "mod"), [(d, m) for d in DATASETS for m in MODALITIES])
def test_paper_preset_is_the_published_recipe(ds, mod, tmp_path):
    flat = resolved([f"experiment=paper_{ds}_{mod}"], tmp_path)
    expected = STUDY_RECIPE | (STUDY_FUSION if mod == "fusion" else {})
    assert {k: flat.get(k) for k in expected} == expected
    assert flat["augment.geometric"] == flat["dataset.augment.geometric"]
    (one_of,) = flat["augment.geometric"]
    # each original kept beside 25 copies: 1 in 26 unchanged
    assert one_of["_target_"] == "albumentations.OneOf" and one_of["p"] == pytest.approx(25 / 26, abs=0.005)
    for transform, (target, params) in zip(one_of["transforms"], STUDY_TRANSFORMS, strict=True):
        assert transform["_target_"] == target
        for key, value in params.items():
            assert OmegaConf.select(OmegaConf.create(transform), key) == pytest.approx(value, abs=1e-3), (target, key)
    if ds == "viri":  # the study's split of VIRI's 566 pairs: 393 / 83 / 90
        assert [round(r * 566) for r in flat["dataset.split.ratios"]] == [393, 83, 90]


def ours_reasons() -> dict[int, str]:
    """The numbered reasons of docs/recipes.md's `ours` section: number -> bold title."""
    text = (REPO / "docs" / "recipes.md").read_text()
    section = text.split("## `ours`: the recommended recipe", 1)[1].split("\n## ", 1)[0]
    return {int(n): title for n, title in re.findall(r"^(\d+)\. \*\*(.+?)\*\*", section, re.M)}


def test_every_documented_reason_of_ours_is_mapped_to_its_keys():
    assert sorted(ours_reasons()) == sorted(OURS_CHANGES), "a reason was added to or removed from docs/recipes.md"


@pytest.mark.parametrize(("ds", "mod"), [(d, m) for d in DATASETS for m in MODALITIES])
def test_ours_differs_from_paper_exactly_where_documented(ds, mod, tmp_path):
    paper = resolved([f"experiment=paper_{ds}_{mod}"], tmp_path)
    ours = resolved([f"experiment=ours_{ds}_{mod}"], tmp_path)
    changed = {k for k in paper.keys() | ours.keys() if paper.get(k) != ours.get(k)}
    reasons = [keys for n, keys in OURS_CHANGES.items() if mod == "fusion" or n not in FUSION_ONLY]
    documented = PAPER_ONLY.union(*reasons)
    assert changed == documented, {"undocumented": changed - documented, "documented, unchanged": documented - changed}
    # the same training budget: the study's optimiser steps on VIRI (160 per epoch) and its validation checks
    epochs = paper["trainer.max_epochs"]
    assert (ours["budget.steps"], ours["budget.val_checks"]) == (160 * epochs, epochs)


@pytest.mark.parametrize(("family", "ds", "mod"), PRESETS)
def test_every_preset_resolves_and_passes_the_run_checks(family, ds, mod, tmp_path):
    cfg = compose_cfg([f"experiment={family}_{ds}_{mod}"], tmp_path)
    check_run_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("recipe", ["paper", "ours"])
@pytest.mark.parametrize("dataset", ["synthetic", "viri", "nvie", "folder"])
@pytest.mark.parametrize("mod", MODALITIES)
def test_recipes_compose_with_every_dataset(recipe, dataset, mod, tmp_path):
    cfg = compose_cfg([f"recipe={recipe}", f"dataset={dataset}", f"modality={mod}"], tmp_path)
    assert (cfg.dataset.name, cfg.modality) == (dataset, mod)
    assert cfg.model.backbone.weights == "imagenet"
    assert cfg.augment.offline_copies == (26 if recipe == "paper" else 0)
    paper = {"visible": 50, "infrared": 50, "fusion": 150}[mod]
    if recipe == "paper":
        assert cfg.trainer.max_epochs == paper and cfg.budget.steps is None
    else:  # the study's optimiser steps on VIRI (160 per epoch) and its validation checks, for any dataset size
        assert (cfg.budget.steps, cfg.budget.val_checks) == (160 * paper, paper)
    if mod == "fusion":
        assert cfg.model.infrared_backbone.attention == ("gate_sq" if recipe == "paper" else "gate")
    else:
        assert "infrared_backbone" not in cfg.model


@pytest.mark.parametrize("dataset", ["viri", "nvie"])
def test_real_data_trains_the_recommended_recipe_by_default(dataset, tmp_path):
    def task(overrides):
        cfg = compose_cfg(overrides, tmp_path)
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.tags = []
        return OmegaConf.to_container(cfg, resolve=True)

    assert task([f"dataset={dataset}"]) == task([f"dataset={dataset}", "recipe=ours"])
    short = compose_cfg(["dataset=synthetic"], tmp_path)
    assert short.trainer.max_epochs == 12 and short.model.backbone.weights is None
    assert short.augment.geometric[0]._target_ == "albumentations.HorizontalFlip"


def test_an_augment_choice_replaces_the_recipes(tmp_path):
    cfg = compose_cfg(["recipe=paper", "augment=none"], tmp_path)
    assert list(cfg.augment.geometric) == [] and cfg.augment.offline_copies == 0


def test_the_study_keeps_interleave_and_the_default_and_ours_fuse_gated(tmp_path):
    """The fusion mode is chosen by measurement for the default and ours, and stays the study's in its recipe."""
    for overrides in (["modality=fusion"], ["experiment=ours_viri_fusion"], ["experiment=ours_nvie_fusion"]):
        cfg = compose_cfg(overrides, tmp_path)
        assert (cfg.model.fusion, cfg.model.aux_loss_weight) == ("gated", 1.0), overrides
    for name in ("paper_viri_fusion", "paper_nvie_fusion"):
        cfg = compose_cfg([f"experiment={name}"], tmp_path)
        assert (cfg.model.fusion, cfg.model.aux_loss_weight) == ("interleave", 0.0), name


def test_speed_settings_follow_the_chosen_accelerator(monkeypatch):
    import torch

    from fer_lightning.resolvers import auto_precision, on_cuda

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, expected in (((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed"), ((7, 0), "16-mixed")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda c=capability: c)
        assert auto_precision("auto") == auto_precision("gpu") == auto_precision("cuda") == expected
        assert on_cuda("auto") and on_cuda("gpu")
        # a CPU run on a GPU host: fp32, no channels_last or cudnn autotuning
        assert auto_precision("cpu") == "32-true" and not on_cuda("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_precision("auto") == "32-true" and not on_cuda("auto")


def test_composed_speed_settings_read_trainer_accelerator(tmp_path):
    trainer = OmegaConf.load(CONF / "trainer" / "default.yaml")
    assert trainer._get_node("precision")._value() == "${fer_precision:${trainer.accelerator}}"
    cfg = compose_cfg(["trainer.accelerator=cpu"], tmp_path)
    assert cfg.model.channels_last is False and cfg.trainer.benchmark is False
