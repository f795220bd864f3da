"""Test accuracy of every checkpoint a run kept (best-validation and last.ckpt), with and without a horizontal-flip
test-time average, on the run's own test split: which weights to test, measured on the same trained runs.

    python tools/rescore_checkpoints.py logs/small/ours_480-s0 [more run dirs]   # one JSON line per run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import fer_lightning.resolvers  # noqa: F401  (registers the resolvers the run configs use)
from fer_lightning.runs.instantiate import build_datamodule, model_from_checkpoint
from fer_lightning.runs.run_checkpoint import load_run_checkpoint


def rescore(checkpoint: Path) -> dict:
    run = load_run_checkpoint(checkpoint)
    model = model_from_checkpoint(run).eval()
    datamodule = build_datamodule(run.config.dataset, read_only=True)
    datamodule.setup("test")
    hits = {"plain": 0, "hflip_tta": 0}
    n = 0
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            inputs = model._inputs(datamodule.normalize(batch))
            probs = model(inputs).float().softmax(1)
            flipped = model({k: v.flip(-1) for k, v in inputs.items()}).float().softmax(1)
            labels = batch["label"]
            hits["plain"] += int((probs.argmax(1) == labels).sum())
            hits["hflip_tta"] += int(((probs + flipped).argmax(1) == labels).sum())
            n += len(labels)
    return {**{k: round(v / n, 4) for k, v in hits.items()}, "n": n}


def main(run_dirs: list[str]) -> None:
    for run_dir in map(Path, run_dirs):
        row = {"run": run_dir.name}
        for checkpoint in sorted((run_dir / "checkpoints").glob("*.ckpt")):
            row["last" if checkpoint.stem == "last" else "best"] = rescore(checkpoint)
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
