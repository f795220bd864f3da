"""``python -m fer_lightning.evaluate ckpt_path=<ckpt> [overrides]``: test a checkpoint with its run's own config.

The run's saved ``.hydra/config.yaml`` (beside ``checkpoints/``) says which dataset, modality, image size and
classes the checkpoint was trained with, so none of them need repeating. Overrides given on the command line
(e.g. ``dataset.split.fold=1``, ``paths.data_dir=...``) are applied on top of it; ``split=val`` tests the
validation split instead of the test split. Writes results.json, confusion_matrix.png and predictions.csv into
this command's own run dir.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fer_lightning.app import command, console_entry
from fer_lightning.runs import evaluate_checkpoint, load_run_checkpoint
from fer_lightning.runs.config import evaluation_config


def evaluate(cfg: DictConfig) -> dict:
    """Tests ``cfg.ckpt_path`` on ``cfg.split`` of its run's data; returns the results.json contents."""
    run = load_run_checkpoint(cfg.get("ckpt_path"))
    run_cfg, applied = evaluation_config(run.config, cfg)
    return evaluate_checkpoint(cfg, run_cfg, run, applied)


main = command("eval", evaluate)
cli = console_entry(main)


if __name__ == "__main__":
    cli()
