"""``python -m fer_lightning.robustness ckpt_path=<ckpt>`` (or ``ckpt_paths=[a,b,...]``): accuracy under corrupted
or missing modalities.

Each checkpoint is tested on its run's test split, clean, then with one modality corrupted by each kind at each
severity (and, for late / gated fusion, with each modality missing). Writes ``robustness.csv`` and
``robustness.png`` (a panel per kind, a line per model and corrupted modality) into this command's run dir.
"""

from __future__ import annotations

from fer_lightning.app import command, console_entry
from fer_lightning.runs.robustness import robustness_grid

main = command("robustness", robustness_grid)
cli = console_entry(main)


if __name__ == "__main__":
    cli()
