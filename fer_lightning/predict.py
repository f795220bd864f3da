"""``python -m fer_lightning.predict ckpt_path=<ckpt> visible=<img> infrared=<img>`` or ``input_dir=<dir>``.

``model=<model.onnx>`` instead of ``ckpt_path=`` predicts from an exported model (``python -m fer_lightning.export``)
through onnxruntime, with the same output. One sample prints a JSON object (the predicted class as ``prediction``
and the probability of each class); ``input_dir`` predicts every image (single-modality model) or every
visible/infrared pair (fusion model: ``<dir>/visible/`` and ``<dir>/infrared/``, paired by file stem) and writes
predictions.csv (``label`` empty: the true class is unknown; ``pred`` the predicted one) and rejected.csv beside it
(``file, reason``: each image left out, unreadable or without a partner). It fails only when no sample can be read.
"""

from __future__ import annotations

from fer_lightning.app import command, console_entry
from fer_lightning.runs.predict import command_line, predict

main = command("predict", predict)
# model=<file>.onnx is renamed before Hydra reads it as the model config group (runs/prediction.command_line)
cli = console_entry(main, command_line)


if __name__ == "__main__":
    cli()
