"""Training throughput of this framework beside the study's pipeline
(:mod:`fer_lightning.benchmarks.study_pipeline`) on the same generated images: the framework's train, loader-only
and evaluation rates, the cache and offline-draw costs, and the paper protocol's time extrapolated from them.
``python -m fer_lightning.bench`` is its command."""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from fer_lightning.benchmarks.profiling import Timer
from fer_lightning.benchmarks.study_pipeline import (
    STUDY_WORKERS,
    VIRI,
    make_images,
    run_study_style,
    sync,
)
from fer_lightning.budget import apply_budget
from fer_lightning.data.datamodule import ManifestDataModule
from fer_lightning.data.datasets import FERDataset, available_cores, offline_expand
from fer_lightning.data.manifest import read_manifest
from fer_lightning.data.transforms import PairTransform
from fer_lightning.errors import FERError
from fer_lightning.resolvers import auto_precision
from fer_lightning.runs import Run, build_model

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_config(args: argparse.Namespace) -> DictConfig:
    """``conf/train.yaml`` as ``python -m fer_lightning.train`` composes it, set up for the benchmark."""
    overrides = [
        f"modality={args.modality}",
        f"augment={args.augment}",
        "augment.offline_copies=0",  # online draws: the framework pays for augmentation inside the timed steps
        f"model.backbone.name={args.backbone}",
        "model.backbone.weights=null",  # random init: no download; speed does not depend on the weights
        "model.scheduler=null",
        f"model.channels_last={args.device == 'cuda'}",
        f"model.compile={args.compile}",
        *args.overrides,
    ]
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    except HydraException as exc:
        raise FERError(f"bench overrides {overrides}: {str(exc).splitlines()[0]}") from exc


def run_framework(dm: ManifestDataModule, args, cfg: DictConfig, classes: list[str]) -> dict:
    """Times ``args.steps`` training steps (after ``args.warmup``) of the framework's model and loader on
    ``dm``; returns its training and evaluation images per second, the precision used and the model."""
    model = build_model(cfg.model, classes)
    timer = Timer(args.warmup, args.device)
    precision = auto_precision() if args.device == "cuda" else "32-true"
    trainer = L.Trainer(
        accelerator=args.device,
        devices=1,
        precision=precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=args.device == "cuda",
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    train_img_s = timer.n / (timer.t1 - timer.t0)
    eval_img_s = _eval_throughput(model, dm, args, precision)
    return {"img_s": train_img_s, "eval_img_s": eval_img_s, "precision": precision, "model": model}


def model_only(dm: ManifestDataModule, args, cfg: DictConfig, classes: list[str]) -> float:
    """Images/s of forward + backward + Adam step on one batch kept on the device: the model with no data loading."""
    model = build_model(cfg.model, classes).to(args.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = next(iter(dm.train_dataloader()))
    batch = dm.normalize({key: v.to(args.device) for key, v in batch.items()})
    dtype = torch.bfloat16 if args.device == "cuda" and auto_precision("cuda").startswith("bf16") else None
    t0 = None
    for k in range(args.warmup + args.steps):
        if k == args.warmup:
            sync(args.device)
            t0 = time.perf_counter()
        with torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(model._inputs(batch)).float(), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(args.device)
    return args.steps * int(batch["label"].shape[0]) / (time.perf_counter() - t0)


def training_run(dm: ManifestDataModule, args, cfg: DictConfig, work: Path) -> dict:
    """A real training run of ``args.run_steps`` optimiser steps (validation, callbacks and checkpoint writes
    included, as ``train`` runs it): its wall time and the share of it the steps waited for data."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.output_dir = str(work / "run")
        cfg.budget = {"steps": args.run_steps, "val_checks": 2}
        cfg.trainer.accelerator = args.device
        cfg.trainer.precision = auto_precision(args.device)
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.profiler = {"_target_": "fer_lightning.benchmarks.profiling.DataWaitProfiler"}
        cfg.callbacks.pop("progress_bar", None)
        cfg.logger = None
    shutil.rmtree(work / "run", ignore_errors=True)
    dm.passes_setting = args.passes
    dm.passes_per_epoch = 1 if args.passes == "auto" else int(args.passes)
    budget = apply_budget(cfg, dm)
    run = Run(cfg, dm, build_model(cfg.model, dm.classes))
    run.budget = budget
    fit = run.fit()
    profiler = run.trainer.profiler
    images = budget.steps * args.batch_size
    return {
        "run_steps": budget.steps,
        "run_epochs": budget.epochs,
        "passes_per_epoch": budget.passes_per_epoch,
        "run_wall_s": round(fit.train_seconds, 2),
        "run_img_s": round(images / fit.train_seconds, 1),
        "data_wait_s": round(profiler.wait_s, 2),
        "data_wait_fraction": round(profiler.wait_s / fit.train_seconds, 3),
    }


def _images_per_second(dm: ManifestDataModule, loader, args, steps: int, consume=None) -> float:
    """Images/s through ``consume`` (or none: the loader alone) over ``steps`` batches after ``args.warmup``,
    the loader restarted as often as needed."""
    n, k, t0 = 0, 0, None
    while k < args.warmup + steps:
        for batch in loader:
            batch = dm.normalize({key: v.to(args.device, non_blocking=True) for key, v in batch.items()})
            if consume is not None:
                consume(batch)
            k += 1
            if k == args.warmup:
                sync(args.device)
                t0 = time.perf_counter()
            elif k > args.warmup:
                n += int(batch["label"].shape[0])
            if k >= args.warmup + steps:
                break
    sync(args.device)
    return n / (time.perf_counter() - t0) if n else float("nan")


@torch.no_grad()
def _eval_throughput(model, dm: ManifestDataModule, args, precision: str) -> float:
    model.eval().to(args.device)
    dtype = torch.bfloat16 if precision.startswith("bf16") else None

    def forward(batch: dict) -> None:
        with torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
            model(model._inputs(batch))

    return _images_per_second(dm, dm.val_dataloader(), args, args.steps // 2, forward)


def run_loader_only(dm: ManifestDataModule, args) -> float:
    """Images/s the training loader delivers to the device (normalised) with no model."""
    return _images_per_second(dm, dm.train_dataloader(), args, args.steps)


def offline_draw_seconds(dm: ManifestDataModule, args, n_samples: int = 16) -> float:
    """Seconds per training image to draw the 25 offline copies (measured on a few samples)."""
    train = dm._datasets["train"]
    n = min(n_samples, len(train))
    images = {m: a.subset(range(n)) for m, a in train.images.items()}
    base = FERDataset(images, train.labels[:n], train.indices[:n], train.transform)
    plain = PairTransform(dm.modalities, dm.image_size)
    t = time.perf_counter()
    offline_expand(base, VIRI["copies"], plain, dm.offline_variants(), 0, dm.num_workers)
    return (time.perf_counter() - t) / n


def bench(args: argparse.Namespace, work: Path) -> dict:
    """The whole benchmark in ``work`` (its images generated there, or reused when a kept folder holds as many
    pairs): the framework, the study-style loop and, with ``--run-steps``, a real training run; returns the record
    :func:`~fer_lightning.benchmarks.table.table` prints."""
    cfg = compose_config(args)
    dm, rows, classes = _bench_datamodule(args, cfg, work)
    t = time.perf_counter()
    dm.setup("fit")
    cache_s = time.perf_counter() - t

    fw = run_framework(dm, args, cfg, classes)
    run = training_run(dm, args, cfg, work) if args.run_steps else {}
    model_img_s = model_only(dm, args, cfg, classes)
    loader_img_s = run_loader_only(dm, args)
    draw_s = offline_draw_seconds(dm, args)
    study_img_s = None if args.skip_study else run_study_style(work / "bench", rows, classes, args, cfg)
    return {
        **_setting(args, dm, fw),
        "framework_img_s": round(fw["img_s"], 1),
        "study_style_img_s": _round(study_img_s, 1),
        "ratio": _round(fw["img_s"] / study_img_s if study_img_s else None, 2),
        "loader_img_s": round(loader_img_s, 1),
        "loader_over_model": round(loader_img_s / fw["img_s"], 2),
        "eval_img_s": round(fw["eval_img_s"], 1),
        "model_only_img_s": round(model_img_s, 1),
        **run,
        **_protocol(args, fw, cache_s, draw_s, study_img_s),
    }


def _bench_datamodule(args, cfg: DictConfig, work: Path) -> tuple[ManifestDataModule, list[dict], list[str]]:
    """The datamodule over ``work/bench``'s images (kept ones reused), prepared; its manifest rows and classes."""
    manifest = work / "bench" / "manifest.csv"
    if manifest.is_file() and (work / "bench" / "split.json").is_file() and len(read_manifest(manifest)) == args.pairs:
        rows = read_manifest(manifest)  # a kept --data-dir: the same files again
    else:
        shutil.rmtree(work / "bench", ignore_errors=True)
        rows = make_images(work / "bench", args.pairs, args.unique)
    classes = sorted({r["label"] for r in rows})
    dm = ManifestDataModule(
        modality=args.modality,
        data_dir=str(work),
        name="bench",
        classes=classes,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        augment=instantiate(cfg.augment, _convert_="all"),
        normalization="imagenet",
        pin_memory=args.device == "cuda",
        # the images are shifted and mirrored copies of a few faces, split as given: nothing to look for
        split={"near_duplicates": "off"},
    )
    dm.prepare_data()
    return dm, rows, classes


def _setting(args, dm: ManifestDataModule, fw: dict) -> dict:
    """The record's first keys: the machine, versions and settings the numbers were measured with."""
    backbone = next(iter(fw["model"].backbones.values()))
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else None
    return {
        "device": args.device,
        "device_name": gpu or platform.processor() or platform.machine(),
        "cpu_cores": available_cores(),
        "date": dt.date.today().isoformat(),
        "torch": torch.__version__,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "modality": args.modality,
        "backbone": args.backbone,
        "backbone_params": sum(p.numel() for p in backbone.parameters()),
        "overrides": args.overrides,
        "unit": "pairs/s" if args.modality == "fusion" else "img/s",
        "steps": args.steps,
        "augment": args.augment,
        "precision": fw["precision"],
        "channels_last": args.device == "cuda",
        "compile": args.compile,
        "framework_workers": dm.num_workers,
        "study_workers": STUDY_WORKERS,
    }


def _protocol(args, fw: dict, cache_s: float, draw_s: float, study_img_s: float | None) -> dict:
    """The record's last keys: the cache and offline-draw costs, and the paper protocol's time extrapolated from
    them and the measured rates (VIRI's size)."""
    per_epoch = VIRI["train"] * VIRI["copies"]
    setup_s = cache_s * VIRI["pairs"] / args.pairs + draw_s * VIRI["train"]
    protocol_s = (
        setup_s
        + args.epochs * (per_epoch / fw["img_s"] + VIRI["val"] / fw["eval_img_s"])
        + (VIRI["test"] / fw["eval_img_s"])
    )
    study_protocol_s = args.epochs * per_epoch / study_img_s if study_img_s else None
    return {
        "cache_build_s": round(cache_s, 2),
        "cache_pairs": args.pairs,
        "offline_draw_s_per_image": round(draw_s, 4),
        "protocol": f"VIRI size: {VIRI['train']} train x {VIRI['copies']} offline copies x {args.epochs} "
        f"epochs + val {VIRI['val']}/epoch + test {VIRI['test']}",
        "protocol_s": round(protocol_s, 1),
        "protocol_how": "extrapolated",
        "study_style_protocol_s": _round(study_protocol_s, 1),
    }


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


