"""predict's ``model=<model.onnx>``: an exported model behind the checkpoint predictor's interface, so both give the
same JSON and predictions.csv. Inference is :mod:`fer_lightning.runtime` alone (numpy, Pillow, onnxruntime)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from fer_lightning.data.face_crops import cropper
from fer_lightning.runs.predictor import Predictor
from fer_lightning.runtime import OnnxModel


class OnnxPredictor(Predictor):
    """Checks inputs and formats results as :class:`Predictor` does; decodes and predicts with the ONNX runtime."""

    def __init__(self, path: str | Path):  # no Predictor.__init__: there is no checkpoint or torch model to build
        self.onnx = OnnxModel(path)
        self.classes = self.onnx.classes
        self.modalities = self.onnx.modalities
        self.temperature = self.onnx.temperature
        # what Predictor.decode / finish read: the cached side, and the face step export recorded (face_crops.py)
        self.stored = self.onnx.stored
        self.faces = cropper(self.onnx.meta.get("faces"))
        # what Predictor.check_inputs reads of a checkpoint and its model
        self.run = SimpleNamespace(modality=self.onnx.modality, path=Path(path))
        self.model = SimpleNamespace(supports_missing=self.onnx.supports_missing, fusion=self.onnx.fusion)

    def predict_batch(self, samples: list[dict[str, Path | np.ndarray]]) -> np.ndarray:
        """Class probabilities (N, C) before any temperature (predict applies it, as for a checkpoint)."""
        return self.onnx.predict([self.ready(s) for s in samples], calibrated=False)
