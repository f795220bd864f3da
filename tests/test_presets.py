"""The paper_* presets reproduce the study's recipe; the ours_* presets differ from it only where documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch import nn

from fer_lightning.runs import build_model
from tests.conftest import CONF, compose_cfg

DATASETS = {"viri": ["Angry", "Happy", "Neutral", "Sad", "Surprise"], "nvie": ["fear", "disgust", "happy"]}
MODALITIES = ("visible", "infrared", "fusion")
PRESETS = [(family, ds, mod) for family in ("paper", "ours") for ds in DATASETS for mod in MODALITIES]

# The study's heads (docs/study.md), as layer sequences of the built model.
STUDY_HEADS = {
    "visible": [("Dropout", 0.4), ("Linear", 512, 256), ("Dropout", 0.4), ("Linear", 256, "C")],
    "infrared": [
        ("Dropout", 0.7),
        ("Linear", 512, 256),
        ("ReLU",),
        ("BatchNorm1d", 256),
        ("Dropout", 0.8),
        ("Linear", 256, "C"),
    ],
    "fusion": [
        ("Dropout", 0.2),
        ("Linear", 1024, 256),
        ("ReLU",),
        ("BatchNorm1d", 256),
        ("Dropout", 0.2),
        ("Linear", 256, "C"),
        ("Dropout", 0.2),
    ],
}


def describe(head: nn.Sequential, classes: int) -> list[tuple]:
    out = []
    for layer in head:
        name = type(layer).__name__
        if isinstance(layer, nn.Dropout):
            out.append((name, layer.p))
        elif isinstance(layer, nn.Linear):
            out.append((name, layer.in_features, "C" if layer.out_features == classes else layer.out_features))
        elif isinstance(layer, nn.BatchNorm1d):
            out.append((name, layer.num_features))
        else:
            out.append((name,))
    return out


def preset(family: str, ds: str, mod: str, tmp_path: Path):
    cfg = compose_cfg([f"experiment={family}_{ds}_{mod}"], tmp_path)
    with open_dict(cfg):
        weights = cfg.model.backbone.weights
        cfg.model.backbone.weights = None  # no download in tests; the configured value is checked separately
    return cfg, weights


def test_every_preset_file_is_tested():
    assert sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")) == sorted(f"{f}_{d}_{m}" for f, d, m in PRESETS)


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
    assert cfg.trainer.max_epochs == (150 if mod == "fusion" else 50)
    assert cfg.trainer.check_val_every_n_epoch == 1
    assert cfg.dataset.eval_batch_size == 8 and cfg.dataset.normalization == "none"
    assert cfg.augment.offline_copies == 26
    assert cfg.callbacks.model_checkpoint.monitor == "val/accuracy" and cfg.callbacks.model_checkpoint.mode == "max"
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


@pytest.mark.parametrize(("ds", "mod"), [(d, m) for d in DATASETS for m in MODALITIES])
def test_ours_differs_from_paper_only_where_documented(ds, mod, tmp_path):
    paper, _ = preset("paper", ds, mod, tmp_path)
    ours, _ = preset("ours", ds, mod, tmp_path)
    flat = {}
    for name, cfg in (("paper", paper), ("ours", ours)):
        task = cfg.copy()
        with open_dict(task):
            del task["hydra"]
        task = OmegaConf.to_container(task, resolve=True)
        task.pop("tags")
        task["logger"]["wandb"].pop("tags")
        flat[name] = dict(_flatten(task))
    changed = {k for k in flat["paper"].keys() | flat["ours"].keys() if flat["paper"].get(k) != flat["ours"].get(k)}
    documented = {
        "model.scheduler.T_max",
        "dataset.normalization",
        "augment.offline_copies",
        "dataset.augment.offline_copies",
        "dataset.eval_batch_size",
        "trainer.max_epochs",
        "trainer.check_val_every_n_epoch",
        "model.channels_last",
        "callbacks.model_checkpoint.last_every_n_epochs",
        "model.mixup_alpha",
        "callbacks.model_checkpoint.test_checkpoint",
    }
    if mod == "fusion":
        documented |= {
            "model.head.dropout_out",
            "model.infrared_backbone.attention",
            "model.modality_dropout",
            "model.fusion",
            "model.aux_loss_weight",
        }
    assert changed <= documented, changed - documented
    # the same training budget: as many images seen and as many validation checks as the study
    assert ours.trainer.max_epochs == 26 * paper.trainer.max_epochs
    assert ours.trainer.max_epochs / ours.trainer.check_val_every_n_epoch == paper.trainer.max_epochs
    assert ours.model.scheduler.T_max == ours.trainer.max_epochs


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


SNAPSHOT = Path(__file__).parent / "data" / "preset_snapshot.json"
# Values that depend on the machine or the run dir are compared as written, not as resolved.
_UNRESOLVED_MARKS = ("${paths.", "${oc.env", "${hydra:", "${fer_", "${now:")


def resolved_preset(name: str, tmp_path: Path) -> dict:
    """The composed config of ``experiment=<name>`` as flat ``key -> value``, without hydra and paths."""
    cfg = compose_cfg([f"experiment={name}"], tmp_path)
    with open_dict(cfg):
        del cfg["hydra"]
        del cfg["paths"]
    raw = dict(_flatten(OmegaConf.to_container(cfg, resolve=False)))
    with open_dict(cfg):
        for key, value in raw.items():
            if isinstance(value, str) and any(mark in value for mark in _UNRESOLVED_MARKS):
                OmegaConf.update(cfg, key, value.replace("${", "$[").replace("}", "]"), force_add=True)
    return dict(_flatten(OmegaConf.to_container(cfg, resolve=True)))


def preset_names() -> list[str]:
    return [f"{f}_{d}_{m}" for f, d, m in PRESETS]


@pytest.mark.parametrize("name", preset_names())
def test_preset_composes_to_its_snapshot(name, tmp_path):
    """The preset resolves to the values recorded before the recipes were factored out of conf/experiment/."""
    expected = json.loads(SNAPSHOT.read_text())[name]
    # changed on purpose, each for its reason; every other key resolves exactly as recorded
    del expected["dataset.pretrained"]  # model.backbone.weights comes from the recipe, not the dataset group
    if name.startswith("ours_"):
        assert expected["dataset.eval_batch_size"] == expected["dataset.batch_size"]
        expected["dataset.eval_batch_size"] = None  # null: the training batch size, as before
        expected["model.channels_last"] = "$[fer_on_cuda:]"  # a speed setting, on wherever a GPU is used
    # added later: the budget in epochs and last.ckpt at each validation check (the paper's: every epoch), both the
    # recorded behaviour; of tied validation accuracies the later checkpoint, as the study's loop kept
    expected |= {"budget.steps": None, "budget.val_checks": None, "callbacks.model_checkpoint.tie_break": "later"}
    expected.setdefault("callbacks.model_checkpoint.last_every_n_epochs", expected["trainer.check_val_every_n_epoch"])
    # added later by the timm / wandb issue: no extra timm arguments, and the wandb run's group, job type, tags
    # and top-level seed / fold
    dataset, modality = expected["dataset.name"], expected["modality"]
    if expected["modality"] == "fusion":  # the fusion issue's keys
        fusion_keys = {"late_combine", "gate", "cross_attention", "aux_loss_weight"}
        node = OmegaConf.load(CONF / "modality" / "fusion.yaml").model
        for key, value in _flatten({k: v for k, v in OmegaConf.to_container(node).items() if k in fusion_keys}):
            expected[f"model.{key}"] = value
        expected["model.aux_loss_weight"] = 0.0
        # the timm issue: the infrared branch's name / weights / kwargs, null (as model.backbone) unless given
        expected |= {f"model.infrared_backbone.{k}": None for k in ("name", "weights", "kwargs")}
        if name.startswith("ours_"):  # the measured mode (docs/benchmarks.md#fusion-modes); paper keeps the study's
            expected |= {"model.fusion": "gated", "model.aux_loss_weight": 1.0}
    expected |= {
        "model.backbone.kwargs": None,
        "logger.wandb.group": None,
        "logger.wandb.job_type": modality,
        "logger.wandb.dataset": dataset,
        "logger.wandb.modality": modality,
        "logger.wandb.config.seed": expected["seed"],
        "logger.wandb.config.fold": expected["dataset.split.fold"],
    }
    # changed by the real-data issue, measured there (docs/benchmarks.md#small-data): the cache keeps the source
    # resolution for the warps, and the study's perspective and shear at torchvision's strength
    paper_geometric = OmegaConf.to_container(OmegaConf.load(CONF / "augment" / "paper.yaml").geometric)
    assert expected["augment.geometric"] == expected["dataset.augment.geometric"]
    expected |= {"dataset.cache_scale": "auto", "augment.geometric": paper_geometric}
    expected["dataset.augment.geometric"] = paper_geometric
    # and the study's double softmax back in both recipes (it helped on dataset=synthetic_small)
    expected["model.softmax_before_loss"] = True
    # added by the real-data issue: mixup, off unless a recipe turns it on
    ours_mixup = OmegaConf.load(CONF / "recipe" / "ours.yaml").model.get("mixup_alpha", 0.0)
    expected["model.mixup_alpha"] = ours_mixup if name.startswith("ours_") else 0.0
    # and which weights a run tests: ours its final ones (its LR anneals to zero), paper the best-validation ones
    ours_test = OmegaConf.load(CONF / "recipe" / "ours.yaml").callbacks.model_checkpoint.test_checkpoint
    expected["callbacks.model_checkpoint.test_checkpoint"] = ours_test if name.startswith("ours_") else "best"
    # added by the multi-device issue: passes per epoch (1 in the presets' epoch budgets)
    expected["dataset.passes_per_epoch"] = "auto"
    expected |= {"trainer.strategy": "auto", "trainer.num_nodes": 1}
    expected["dataset.split.near_duplicates"] = "group"  # the near-duplicates issue: clusters stay in one split
    expected |= {
        "callbacks.preemption._target_": "fer_lightning.checkpointing.PreemptionCheckpoint",
        "callbacks.preemption.signals": ["SIGUSR2"],
    }
    expected |= {  # and the users issue: a plain progress line per validation check
        "callbacks.progress_log._target_": "fer_lightning.callbacks.ProgressLog",
        "callbacks.progress_log.log_name": "train.log",
        "callbacks.progress_log.output_dir": "$[paths.output_dir]",
    }
    expected |= {  # and quiet by default, a sweep may keep only the tested checkpoint (the users issue)
        "verbose": False,
        "trainer.enable_model_summary": False,
        "logger.wandb.verbose": False,
        "callbacks.model_checkpoint.keep": "all",
    }
    # the speed settings follow the chosen trainer.accelerator, not whether the host has a GPU
    for key, value in expected.items():
        if value in ("$[fer_on_cuda:]", "$[fer_precision:]"):
            expected[key] = value.replace(":]", ":$[trainer.accelerator]]")
    # added by the untrusted-input issue: what an archive of the published datasets may expand to
    caps = OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml").extract
    expected |= {f"dataset.extract.{k}": v for k, v in caps.items()}
    # added by the faces issue: the presets keep the study's whole frames (faces=none), as the dataset node reads it
    faces = dict(_flatten(OmegaConf.to_container(OmegaConf.load(CONF / "faces" / "_base.yaml"))))
    assert faces["mode"] == "none"
    expected |= {f"{node}.{k}": v for node in ("faces", "dataset.faces") for k, v in faces.items()}
    assert resolved_preset(name, tmp_path) == expected


def write_snapshot(tmp_path: Path) -> None:
    """``python -m tests.test_presets``: records every preset's resolved config (run only on purpose)."""
    snapshot = {name: resolved_preset(name, tmp_path / name) for name in preset_names()}
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_snapshot(Path(tmp))


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
