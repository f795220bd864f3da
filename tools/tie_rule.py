"""Which tie rule of ``callbacks.model_checkpoint.tie_break`` keeps the better checkpoint on a small validation set?

One training run per seed records, at every validation check, the validation accuracy and loss and the test
accuracy of the model as it is then; each rule's pick is scored offline on the same runs, so the rules are compared
on identical training trajectories. A measurement, not a product path:

    python tools/tie_rule.py --seeds 0 1 2 3 4 [--epochs 30] [--out tie_rule.json] [overrides ...]

Prints one Markdown table (mean ± std over seeds of each rule's test accuracy, and how often the rules disagree).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_lightning.train import train  # noqa: E402

# ~10 validation images per class-subject: 20 subjects x 5 classes x 2 samples, 3 validation subjects (30 images)
SMALL = [
    "dataset.generator.n_subjects=20",
    "dataset.generator.samples_per_class=2",
    "logger=none",
    "~callbacks.progress_bar",
    "+trainer.enable_progress_bar=false",
]


class TestEveryCheck(L.Callback):
    """Records (epoch, val accuracy, val loss, test accuracy) at the end of every validation check."""

    rows: ClassVar[list[dict]] = []  # of the run in progress (train() instantiates the callback from the config)

    @torch.no_grad()
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm, was_training = trainer.datamodule, pl_module.training
        pl_module.eval()
        right = total = 0
        for batch in dm.test_dataloader():
            batch = dm.on_after_batch_transfer(pl_module.transfer_batch_to_device(batch, pl_module.device, 0), 0)
            logits = pl_module(pl_module._inputs(batch))
            right += int((logits.argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
        pl_module.train(was_training)
        metrics = trainer.callback_metrics
        TestEveryCheck.rows.append(
            {
                "epoch": trainer.current_epoch,
                "val_accuracy": float(metrics["val/accuracy"]),
                "val_loss": float(metrics["val/loss"]),
                "test_accuracy": right / total,
            }
        )


def picks(rows: list[dict]) -> dict[str, dict]:
    best = max(r["val_accuracy"] for r in rows)
    tied = [r for r in rows if r["val_accuracy"] == best]
    return {"earlier": tied[0], "later": tied[-1], "val_loss": min(tied, key=lambda r: r["val_loss"])}


def run(seed: int, epochs: int, overrides: list[str], out_dir: Path) -> list[dict]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        overrides = [*SMALL, f"seed={seed}", f"trainer.max_epochs={epochs}", *overrides]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / f"seed{seed}")
        cfg.callbacks.tie_probe = {"_target_": f"{__name__}.TestEveryCheck"}
    TestEveryCheck.rows = []
    train(cfg)
    return TestEveryCheck.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("tie_rule.json"))
    parser.add_argument("--work", type=Path, default=Path("logs/tie_rule"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    runs = {seed: run(seed, args.epochs, args.overrides, args.work) for seed in args.seeds}
    chosen = {seed: picks(rows) for seed, rows in runs.items()}
    args.out.write_text(json.dumps({"overrides": args.overrides, "epochs": args.epochs, "runs": runs}, indent=1))
    print(f"| rule | test accuracy, mean ± std over {len(runs)} seeds | picked epochs |")
    print("|---|---|---|")
    for rule in ("earlier", "later", "val_loss"):
        accs = [chosen[s][rule]["test_accuracy"] for s in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        epochs = ", ".join(str(chosen[s][rule]["epoch"]) for s in runs)
        print(f"| {rule} | {statistics.fmean(accs):.3f} ± {std:.3f} | {epochs} |")
    ties = [sum(r["val_accuracy"] == max(x["val_accuracy"] for x in rows) for r in rows) for rows in runs.values()]
    print(f"\nchecks tied at the best validation accuracy, per seed: {ties}")


if __name__ == "__main__":
    main()
