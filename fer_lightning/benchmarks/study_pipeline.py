"""A re-creation of the study's training pipeline, for ``python -m fer_lightning.bench``: its image files
(640x480 JPEGs), its loader (PIL decode + torchvision resize every epoch, 2 workers) and its loop (fp32, softmax
before CrossEntropyLoss, ``torch.cuda.empty_cache()`` and ``loss.item()`` every step)."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, open_dict
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fer_lightning.data import synthetic
from fer_lightning.data.manifest import write_manifest
from fer_lightning.data.split_drawing import SplitSpec
from fer_lightning.io import atomic_write_text
from fer_lightning.runs import build_model

# The study's protocol at VIRI size: 566 pairs -> train 393 / val 83 / test 90; 26 images per training image.
VIRI = {"pairs": 566, "train": 393, "val": 83, "test": 90, "copies": 26}
STUDY_SIZE = (640, 480)
STUDY_WORKERS = 2


def sync(device: str) -> None:
    """Waits for the GPU's queued work (a no-op on the CPU), so a timer reads the work's end."""
    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- data


def make_images(out: Path, pairs: int, unique: int, seed: int = 0) -> list[dict]:
    """``pairs`` visible+infrared 640x480 JPEGs under ``out`` (a manifest dir), split ~ like VIRI.

    ``unique`` faces are rendered by :mod:`synthetic` and re-used with a shift and flip per copy, so every
    file differs while generation stays fast.
    """
    per_class = max(1, math.ceil(unique / len(synthetic.CLASSES)))
    src = synthetic.generate(out / "_faces", n_subjects=1, samples_per_class=per_class, image_size=96, seed=seed)
    faces = {
        m: [np.asarray(Image.open(out / "_faces" / r[m]).convert("RGB")) for r in src] for m in ("visible", "infrared")
    }
    labels = [r["label"] for r in src]
    ratios = np.array([VIRI["train"], VIRI["val"], VIRI["test"]]) / VIRI["pairs"]
    order = np.random.default_rng(seed).permutation(pairs)
    cut = np.round(np.cumsum(ratios) * pairs).astype(int)
    split_of = np.empty(pairs, dtype=object)
    for name, part in zip(("train", "val", "test"), np.split(order, cut[:2]), strict=True):
        split_of[part] = name
    rows = []
    for j in range(pairs):
        u = j % len(src)
        sid = f"b{j:05d}"
        row = {"sample_id": sid, "label": labels[u], "subject": sid, "split": split_of[j]}
        for m in ("visible", "infrared"):
            a = np.roll(faces[m][u], shift=(j // len(src)) % 9 - 4, axis=1)
            if (j // len(src)) % 2:
                a = a[:, ::-1]
            rel = f"images/{m}/{labels[u]}/{sid}.jpg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(a)).resize(STUDY_SIZE, Image.Resampling.BICUBIC).save(
                out / rel, quality=92
            )
            row[m] = rel
        rows.append(row)
    shutil.rmtree(out / "_faces")
    write_manifest(out / "manifest.csv", rows)
    # Splits are given, not drawn: the split state says so, so the datamodule keeps them.
    atomic_write_text(out / "split.json", json.dumps(SplitSpec().to_json(), indent=2) + "\n")
    return rows


class StudyStyleDataset(Dataset):
    """The study's loader: each item opens its JPEG(s) with PIL and resizes + converts with torchvision."""

    def __init__(self, root: Path, rows: list[dict], modalities: tuple[str, ...], classes: list[str], size: int):
        from torchvision import transforms

        self.files = [[root / r[m] for m in modalities] for r in rows]
        self.labels = [classes.index(r["label"]) for r in rows]
        self.tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return (*[self.tf(Image.open(p).convert("RGB")) for p in self.files[i]], self.labels[i])


def study_model_config(cfg: DictConfig) -> DictConfig:
    """The same model as the study ran it: no channels_last, no compile."""
    model = cfg.model.copy()
    with open_dict(model):
        model.channels_last = False
        model.compile = False
    return model


def run_study_style(root: Path, rows: list[dict], classes: list[str], args, cfg: DictConfig) -> float:
    """Times the source study's training loop (PIL decoding every epoch, a plain Adam loop, fp32) on the same
    model and images for ``args.study_steps`` steps after ``args.warmup``; returns images per second."""
    modalities = ("visible", "infrared") if args.modality == "fusion" else (args.modality,)
    train_rows = [r for r in rows if r["split"] == "train"]
    ds = StudyStyleDataset(root, train_rows, modalities, classes, args.image_size)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=STUDY_WORKERS)
    model = build_model(study_model_config(cfg), classes).to(args.device)
    torch.backends.cudnn.benchmark = False  # PyTorch's default, which the study kept (the Trainer set it on)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    k, n, t0, running_loss, correct = 0, 0, None, 0.0, 0
    while k < args.warmup + args.study_steps:
        for *images, labels in loader:
            batch = {m: x.to(args.device) for m, x in zip(modalities, images, strict=True)}
            labels = labels.to(args.device)
            optimizer.zero_grad()
            outputs = model(batch).softmax(dim=1)  # the study's heads ended in Softmax
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            correct += (outputs.argmax(1) == labels).sum().item()
            if args.device == "cuda":
                torch.cuda.empty_cache()
            k += 1
            if k == args.warmup:
                t0 = time.perf_counter()
            elif k > args.warmup:
                n += len(labels)
            if k >= args.warmup + args.study_steps:
                break
    sync(args.device)
    return n / (time.perf_counter() - t0)
