"""``python -m fer_lightning.explain ckpt_path=<ckpt> visible=<img> infrared=<img>``: Grad-CAM per branch.

Each modality branch gets its own heat map from its backbone's last stage (``models.backbone_base``'s
``Backbone.cam_target``: a ResNet's ``trunk.layer4``, a timm CNN's last feature stage, a ViT's last block with the
token reshape), computed by the ``grad-cam`` package for the predicted (or the ``target``) class with the other
branch's input held fixed, resized to the input image and overlaid on it.
"""

from __future__ import annotations

from fer_lightning.analysis.cam import explain
from fer_lightning.app import command, console_entry

main = command("explain", explain)
cli = console_entry(main)


if __name__ == "__main__":
    cli()
