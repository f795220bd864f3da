"""Grad-CAM heat maps for a run's model: one per modality branch, from its backbone's last stage, for the
predicted (or a chosen) class with the other branch's input held fixed, overlaid on the input image.
``python -m fer_lightning.explain`` is its command."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from fer_lightning.data.images import load_rgb
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_path
from fer_lightning.modalities import CAMERAS
from fer_lightning.runs import Predictor, load_run_checkpoint
from fer_lightning.validation import Number


class _Branch(nn.Module):
    """The network's logits as a function of one modality's image, the other inputs fixed (GradCAM calls
    model(x))."""

    def __init__(self, model: nn.Module, modality: str, batch: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self.modality = modality
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model({**self.batch, self.modality: x})["logits"]


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp)


def _framed(frame: np.ndarray, box) -> np.ndarray:
    """``frame`` with the face box drawn on it."""
    img = Image.fromarray(frame)
    if box is not None:
        ImageDraw.Draw(img).rectangle([round(v) for v in box], outline="lime", width=max(1, min(img.size) // 80))
    return np.asarray(img)


def explain(cfg: DictConfig) -> dict:
    """Writes one ``<image stem>_<modality>_gradcam.png`` per branch (with the run's face settings: on the face's
    crop, and ``<image stem>_<modality>_face.png``, the frame with the box); returns the prediction and the files."""
    predictor = Predictor(load_run_checkpoint(cfg.get("ckpt_path")), device=cfg.get("device") or "cpu")
    predictor.check_faces(cfg)
    paths = predictor.check_inputs({m: cfg.get(m) for m in CAMERAS})
    frames = {m: predictor.decode(p) for m, p in paths.items()}
    images, face = predictor.finish(frames, paths)
    probs = predictor.predict_batch([images])[0]
    target = cfg.get("target")
    if target is None:
        target_idx = int(probs.argmax())
    elif str(target) in predictor.classes:
        target_idx = predictor.classes.index(str(target))
    else:
        raise FERError(f"target={target}: not a class of this checkpoint; use one of {', '.join(predictor.classes)}")
    alpha = Number(float, 0, 1, hint=" (the heat map's opacity)").check("alpha", cfg.get("alpha", 0.5))

    batch = predictor.batch([images])
    out_dir = Path(cfg.get("output_dir") or cfg.paths.output_dir)
    # what the heat map is drawn on: the crop the network saw, at its own resolution, or the whole input image
    shown = predictor.faces.crops(frames, face) if face is not None else {m: load_rgb(p) for m, p in paths.items()}
    written, framed = {}, {}
    for m in predictor.modalities:
        branch = _Branch(predictor.model, m, batch)
        layer, reshape = predictor.model.backbones[m].cam_target()
        with GradCAM(model=branch, target_layers=[layer], reshape_transform=reshape) as cam:
            heat = cam(input_tensor=batch[m], targets=[ClassifierOutputTarget(target_idx)])[0]
        original = shown[m]
        h, w = original.shape[:2]
        heat = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        overlay = show_cam_on_image(
            original.astype(np.float32) / 255, np.clip(heat, 0, 1), use_rgb=True, image_weight=1 - alpha
        )
        path = out_dir / f"{paths[m].stem}_{m}_gradcam.png"
        _save_png(overlay, path)
        written[m] = str(path)
        if face is not None:
            framed[m] = str(out_dir / f"{paths[m].stem}_{m}_face.png")
            _save_png(_framed(frames[m], getattr(face, f"{m}_box")), Path(framed[m]))
    result = {
        **predictor.as_dict(probs),
        "explained_class": predictor.classes[target_idx],
        "heatmaps": written,
        **predictor.face_dict(face),
        **({"frames": framed} if framed else {}),
    }
    print(json.dumps(result, indent=2))
    return result
