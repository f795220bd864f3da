"""``python -m fer_lightning.bench``: training throughput of this framework vs the study's pipeline, same run.

Both train the same architecture (``--backbone``: ResNet-18, any registered name or ``timm/<model>``) on the
same generated images for a fixed number of steps:

- framework: the real datamodule (images decoded once into the uint8 cache, augmentation in workers) and
  LightningModule under a Lightning Trainer (bf16-mixed + channels_last + cudnn benchmark on a GPU);
- study-style: a re-creation of the study's loop: 640x480 JPEG files decoded with PIL and resized by a
  torchvision-style Dataset every epoch, float32 tensors from 2 workers, fp32, ``torch.cuda.empty_cache()``
  and ``loss.item()`` every step.

The model and the augmentation come from the project's own config (``conf/train.yaml`` composed by Hydra, the
model built as ``train`` builds it); trailing ``KEY=VALUE`` arguments are Hydra overrides on top, e.g.
``model.backbone.kwargs={img_size:64}`` for a ViT at 64 px. The last line printed is one JSON object (see
``docs/clusters.md#data-loading``); images/s count pairs for ``--modality fusion``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from fer_lightning.benchmarks.study_pipeline import VIRI
from fer_lightning.benchmarks.table import table
from fer_lightning.benchmarks.throughput import CONF, bench
from fer_lightning.errors import FERError, expected_error
from fer_lightning.validation import Number

COUNT = Number(int, 1)
FLAG_RULES = {
    **dict.fromkeys(("image_size", "batch_size", "steps", "study_steps", "pairs", "unique", "epochs", "warmup"), COUNT),
    "run_steps": Number(int, 0, fix="use 0 (no training run) or a positive integer"),
    "passes": Number(int, 1, words=("auto",), lenient=True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with each count checked (one ``error:`` line naming the flag) and the device's default
    image size filled in."""
    p = argparse.ArgumentParser(prog="python -m fer_lightning.bench", description=__doc__.split("\n\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    p.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    p.add_argument("--modality", choices=("visible", "infrared", "fusion"), default="visible")
    p.add_argument("--backbone", default="resnet18", help="model.backbone.name: resnet18/34/50 or timm/<model>")
    p.add_argument("--image-size", type=int, default=None, help="default: 224 on cuda, 64 on cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per pipeline")
    p.add_argument("--study-steps", type=int, default=None, help="timed study-style steps (default: --steps)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (worker start, cudnn autotune)")
    p.add_argument("--pairs", type=int, default=VIRI["pairs"], help="generated image pairs (VIRI: 566)")
    p.add_argument("--unique", type=int, default=20, help="distinct synthetic faces behind the pairs")
    p.add_argument("--augment", default="paper", help="a preset in conf/augment/ for the framework")
    p.add_argument("--workers", default="auto", help="framework DataLoader workers (the study-style uses 2)")
    p.add_argument("--compile", action="store_true", help="torch.compile the framework's backbones")
    p.add_argument("--epochs", type=int, default=50, help="epochs of the paper protocol to extrapolate")
    p.add_argument("--data-dir", type=Path, default=None, help="keep the generated data here (default: temp)")
    p.add_argument("--skip-study", action="store_true", help="framework only (no study-style run)")
    p.add_argument(
        "--run-steps",
        type=int,
        default=0,
        help="also time a real training run of this many steps (validation, checkpoints): wall time and data wait",
    )
    p.add_argument("--passes", default="auto", help="dataset.passes_per_epoch of that run: auto or an integer")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides of conf/train.yaml")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise FERError("--device cuda: no CUDA device is visible; use --device cpu")
    if args.image_size is None:
        args.image_size = 224 if args.device == "cuda" else 64
    if args.study_steps is None:
        args.study_steps = args.steps
    for name, rule in FLAG_RULES.items():
        setattr(args, name, rule.check(f"--{name.replace('_', '-')}", getattr(args, name)))
    if not (CONF / "augment" / f"{args.augment}.yaml").is_file():
        raise FERError(f"--augment {args.augment}: no {CONF / 'augment' / args.augment}.yaml")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark on fresh synthetic data (kept in ``--data-dir`` if given); prints the table and, last,
    one JSON line. Returns the exit status: 2 with one ``error:`` line for bad input."""
    logging.basicConfig(level=logging.WARNING)
    from fer_lightning.app import quiet_libraries

    quiet_libraries()
    try:
        args = parse_args(argv)
        if args.data_dir is not None:
            args.data_dir.mkdir(parents=True, exist_ok=True)
            result = bench(args, args.data_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="fer-bench-") as tmp:
                result = bench(args, Path(tmp))
    except Exception as exc:
        error = expected_error(exc)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    print(table(result))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
