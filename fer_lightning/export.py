"""``python -m fer_lightning.export ckpt_path=<ckpt> [format=onnx]``: the checkpoint as ``model.onnx`` + ``model.json``
in this command's run dir, after a parity check against PyTorch on the run's own data (see
:mod:`fer_lightning.runs.export`). ``python -m fer_lightning.predict model=<run>/model.onnx ...`` predicts from it.
"""

from __future__ import annotations

from fer_lightning.app import command, hydra_entry
from fer_lightning.runs.export import export_checkpoint

main = command("export", export_checkpoint)


if __name__ == "__main__":
    hydra_entry(main)
