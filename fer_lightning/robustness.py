"""``python -m fer_lightning.robustness ckpt_path=<ckpt>`` (or ``ckpt_paths=[a,b,...]``): accuracy under corrupted
or missing modalities.

Each checkpoint is tested on its run's test split, clean, then with one modality corrupted by each kind at each
severity (and, for late / gated fusion, with each modality missing). Writes ``robustness.csv`` and
``robustness.png`` (a panel per kind, a line per model and corrupted modality) into this command's run dir.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from fer_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fer_lightning.app import hydra_entry, quiet_libraries, report_errors
from fer_lightning.runs.robustness import robustness_grid


@hydra.main(version_base="1.3", config_path="../conf", config_name="robustness")
@report_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    robustness_grid(cfg)


if __name__ == "__main__":
    hydra_entry(main)
