"""``python -m fer_lightning.predict ckpt_path=<ckpt> visible=<img> infrared=<img>`` or ``input_dir=<dir>``.

One sample prints a JSON object (the predicted class as ``prediction`` and the probability of each class);
``input_dir`` predicts every image (single-modality model) or every visible/infrared pair (fusion model:
``<dir>/visible/`` and ``<dir>/infrared/``, paired by file stem) and writes predictions.csv (``label`` empty: the
true class is unknown; ``pred`` the predicted one) and rejected.csv beside it (``file, reason``: each image left
out, unreadable or without a partner). It fails only when no sample can be read.
"""

from __future__ import annotations

from fer_lightning.app import command, console_entry
from fer_lightning.runs.prediction import predict

main = command("predict", predict)
cli = console_entry(main)


if __name__ == "__main__":
    cli()
