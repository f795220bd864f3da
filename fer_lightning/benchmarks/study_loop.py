"""A study-faithful reference loop: Naseem et al. (2025)'s single-modality recipe in plain PyTorch, as a benchmark
for the project's ``paper_*`` presets. Not a product path: it shares nothing with fer_lightning but the prepared
``manifest.csv`` it reads.

What it reproduces (docs/study.md, the study's recipe):
- offline augmentation of the training split only, at the resolution of the files on disk: each image kept plus
  5 draws of each of torchvision's RandomRotation(20), a zoom-out onto a canvas up to 1.5x filled with 123,
  RandomPerspective(distortion_scale=0.5, p=1), RandomAffine(20, shear=0.2) (torchvision's shear is in degrees,
  so 0.2 is 0.2 degrees) and RandomHorizontalFlip(p=1): 26 images per original, then resized to the input size;
- inputs in [0, 1], no normalisation; ResNet-18 (random init: no ImageNet weights offline) without its classifier,
  the gate x * sigmoid(Linear(512, 512)(x)), the head Dropout(0.4), Linear(512, 256), Dropout(0.4), Linear(256, C),
  Softmax, trained with CrossEntropyLoss (the study's double softmax; ``--logits`` trains on logits);
- Adam 1e-3, CosineAnnealingLR(T_max=3) stepped per epoch, batch 64, validation batch 8;
- the checkpoint with the best validation accuracy is tested; on ties the later epoch wins (``>=``, as the
  study's loop did; ``--tie earlier`` keeps the first, ``>``, which is what Lightning's ModelCheckpoint does).

The test split is also scored after every epoch, only to report what the other tie rule would have picked
(``accuracy_tie_earlier`` / ``accuracy_tie_later``); selection uses validation accuracy alone.

    python fer_lightning/benchmarks/study_loop.py --manifest data/synthetic_small/manifest.csv --image-size 64 \
        --epochs 10 --seed 0 --out ref.json
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import models
from torchvision.transforms import v2

from fer_lightning.io import atomic_write_text

DRAWS_PER_TRANSFORM = 5


def study_transforms() -> list:
    """The study's five augmentations, as torchvision applies them to a PIL image."""
    return [
        v2.RandomRotation(20),
        v2.RandomZoomOut(fill=123, side_range=(1.0, 1.5), p=1.0),
        v2.RandomPerspective(distortion_scale=0.5, p=1.0),
        v2.RandomAffine(degrees=20, shear=0.2),
        v2.RandomHorizontalFlip(p=1.0),
    ]


def albumentations_transforms(preset: Path) -> list:
    """The members of an augment preset's single OneOf (conf/augment/paper.yaml), as PIL -> PIL callables."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    geometric = instantiate(OmegaConf.to_container(OmegaConf.load(preset))["geometric"], _convert_="all")
    members = geometric[0].transforms if len(geometric) == 1 and hasattr(geometric[0], "transforms") else geometric

    def wrap(t):
        def apply(img: Image.Image) -> Image.Image:
            t.set_random_seed(int(torch.randint(2**31, (1,))))
            return Image.fromarray(t(image=np.asarray(img))["image"])

        return apply

    return [wrap(t) for t in members]


def read_split(manifest: Path, modality: str) -> tuple[dict[str, list[tuple[Path, str]]], list[str]]:
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r[modality]]
    splits = {s: [(manifest.parent / r[modality], r["label"]) for r in rows if r["split"] == s] for s in SPLITS}
    return splits, sorted({r["label"] for r in rows})


SPLITS = ("train", "val", "test")


def to_tensors(images: list[Image.Image], size: int) -> torch.Tensor:
    # PIL bilinear with antialiasing, as torchvision's Resize on the study's saved files.
    resize = v2.Compose([v2.Resize((size, size)), v2.PILToTensor()])
    return torch.stack([resize(im) for im in images]).float() / 255


def augmented_train_set(
    items: list[tuple[Path, str]], transforms: list, size: int, aug_size: int | None
) -> tuple[list[Image.Image], list[str]]:
    """Each image kept plus DRAWS_PER_TRANSFORM draws of each transform, warped before the final resize."""
    images, labels = [], []
    for path, label in items:
        img = Image.open(path).convert("RGB")
        if aug_size:  # an ablation: warp a smaller copy, as a cache of that size would
            img = img.resize((aug_size, aug_size), Image.Resampling.BILINEAR)
        images.append(img)
        for t in transforms:
            images.extend(t(img) for _ in range(DRAWS_PER_TRANSFORM))
        labels.extend([label] * (1 + DRAWS_PER_TRANSFORM * len(transforms)))
    return images, labels


class StudyNet(nn.Module):
    def __init__(self, num_classes: int, softmax: bool):
        super().__init__()
        self.backbone = models.resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        self.gate = nn.Linear(512, 512)
        layers = [nn.Dropout(0.4), nn.Linear(512, 256), nn.Dropout(0.4), nn.Linear(256, num_classes)]
        self.head = nn.Sequential(*layers, *([nn.Softmax(dim=1)] if softmax else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return self.head(f * torch.sigmoid(self.gate(f)))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss_fn, device) -> tuple[float, float]:
    model.eval()
    correct = total = 0
    loss = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss += float(loss_fn(out, y)) * len(y)
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
    return correct / total, loss / total


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--modality", default="visible", choices=["visible", "infrared"])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--logits", action="store_true", help="no final Softmax: cross-entropy on logits")
    p.add_argument("--tie", default="later", choices=["later", "earlier"], help="which tied epoch is kept")
    p.add_argument("--albumentations", type=Path, default=None, help="an augment preset's transforms instead")
    p.add_argument("--aug-size", type=int, default=None, help="warp at this side instead of the source's")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def _train(model: nn.Module, train_loader: DataLoader, loaders: dict[str, DataLoader], loss_fn, device, args):
    """The study's epochs, validation after each (test too, for the tie report); ``model`` ends with the weights
    of the best validation epoch. Returns that accuracy, that epoch and the per-epoch history."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    best_acc, best_state, best_epoch, history = -1.0, None, -1, []
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        val_acc, val_loss = evaluate(model, loaders["val"], loss_fn, device)
        test_acc, _ = evaluate(model, loaders["test"], loss_fn, device)
        history.append({"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss, "test_accuracy": test_acc})
        if val_acc > best_acc or (args.tie == "later" and val_acc == best_acc):
            best_acc, best_epoch, best_state = val_acc, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_acc, best_epoch, history


def main(argv: list[str] | None = None) -> dict:
    args = _parse_args(argv)
    start = time.perf_counter()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    splits, classes = read_split(args.manifest, args.modality)
    label_of = {c: i for i, c in enumerate(classes)}
    transforms = albumentations_transforms(args.albumentations) if args.albumentations else study_transforms()
    train_images, train_labels = augmented_train_set(splits["train"], transforms, args.image_size, args.aug_size)

    def dataset(images, labels) -> TensorDataset:
        return TensorDataset(to_tensors(images, args.image_size), torch.tensor([label_of[c] for c in labels]))

    train = dataset(train_images, train_labels)
    evals = {
        s: dataset([Image.open(p).convert("RGB") for p, _ in splits[s]], [c for _, c in splits[s]]) for s in SPLITS[1:]
    }
    loaders = {s: DataLoader(d, batch_size=8) for s, d in evals.items()}
    train_loader = DataLoader(train, batch_size=64, shuffle=True)

    device = torch.device(args.device)
    model = StudyNet(len(classes), softmax=not args.logits).to(device)
    loss_fn = nn.CrossEntropyLoss()
    best_acc, best_epoch, history = _train(model, train_loader, loaders, loss_fn, device, args)
    accuracy, _ = evaluate(model, loaders["test"], loss_fn, device)
    tops = [h for h in history if h["val_accuracy"] == best_acc]
    result = {
        "accuracy": accuracy,
        "n": len(evals["test"]),
        "best_val_accuracy": best_acc,
        "best_epoch": best_epoch,
        "tied_epochs": [h["epoch"] for h in tops],
        "accuracy_tie_earlier": tops[0]["test_accuracy"],
        "accuracy_tie_later": tops[-1]["test_accuracy"],
        "train_images": len(train),
        "optimizer_steps": args.epochs * len(train_loader),
        "seconds": round(time.perf_counter() - start, 1),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "history": history,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("accuracy", "n", "best_epoch", "seconds")}))
    return result


if __name__ == "__main__":
    main()
