"""Predictions from an exported model (``model.onnx`` + ``model.json``) with numpy, Pillow and onnxruntime only.

This module never imports torch: it is what a camera box runs. Images go through the preprocessing the training
run's evaluation used, step for step: decoded and resized to the run's cache side as the decode-once cache stores
them (Pillow, bilinear), then resized to the network's input side as the evaluation transform does
(albumentations' ``Resize``: OpenCV, ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when growing; OpenCV is
imported only when the two sides differ). The graph takes uint8 NCHW RGB images and applies the normalisation
itself, so ``model.json``'s ``normalization`` documents what is inside it rather than a step to repeat here.

``onnxruntime`` is imported when a model is loaded, so :func:`softmax` and :func:`rescale` (the temperature
scaling shared with evaluation) need only numpy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer_lightning.data.images import decode_resized
from fer_lightning.errors import FERError

MODEL_JSON = "model.json"
# model.json's own version: a runtime refuses a file written in a layout it does not know
FORMAT = "fer-lightning-onnx/1"
# the smallest normal float32: log-probabilities of probabilities that underflowed to 0 stay finite (about -87)
TINY = float(np.finfo(np.float32).tiny)


def softmax(logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (None or 1: no scaling), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature is not None:
        z = z / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def rescale(probs: np.ndarray, temperature: float | None) -> np.ndarray:
    """Probabilities scaled by a temperature: ``softmax(log(p) / T)``.

    ``log p`` differs from the logits that gave ``p`` only by a constant per row, which the softmax cancels, so
    this equals ``softmax(logits / T)`` without needing the logits (a test outcome stores probabilities).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if temperature is None or float(temperature) == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, TINY, None)), temperature)


def fit_to_input(image: np.ndarray, size: int) -> np.ndarray:
    """The evaluation transform's final resize of a cached (S, S, 3) image to ``size`` x ``size``."""
    if image.shape[:2] == (size, size):
        return image
    import cv2  # only here: a run cached at the input size needs no OpenCV

    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class OnnxModel:
    """An exported model: ``OnnxModel("run/model.onnx").predict([{"visible": "a.png", "infrared": "b.png"}])``.

    ``graphs`` in model.json maps each accepted set of cameras (``"visible+infrared"``, or one camera for the
    fusion modes that can do without the other) to its ONNX file beside model.json.
    """

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        meta_path = path if path.suffix == ".json" else path.with_name(MODEL_JSON)
        if not meta_path.is_file():
            raise FERError(f"model={path}: no {MODEL_JSON} beside it; export with python -m fer_lightning.export")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise FERError(f"{meta_path}: unreadable ({type(exc).__name__}); export the model again") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise FERError(f"{meta_path}: not a {FORMAT} model description; export the model again")
        self.path = meta_path
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.modalities: tuple[str, ...] = tuple(meta["inputs"])
        self.modality: str = meta["modality"]
        self.fusion: str | None = meta.get("fusion")
        self.size = int(meta["input_size"])
        self.stored = int(meta["cache_side"])
        self.temperature: float | None = meta.get("temperature")
        self._sessions: dict[str, object] = {}

    @property
    def supports_missing(self) -> bool:
        return len(self.meta["graphs"]) > 1

    def session(self, present: Sequence[str]):
        key = "+".join(m for m in self.modalities if m in present)
        if key not in self.meta["graphs"]:
            raise FERError(
                f"{self.path}: this {self.modality} model has no graph for {key or 'no image'}; "
                f"it takes {' or '.join(self.meta['graphs'])}"
            )
        if key not in self._sessions:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise FERError(
                    "model=: predicting from an ONNX model needs onnxruntime; pip install 'fer-lightning[export]' "
                    "(or pip install onnxruntime)"
                ) from exc
            graph = self.path.with_name(self.meta["graphs"][key])
            if not graph.is_file():
                raise FERError(f"{graph}: missing; it belongs beside {self.path}, as the export wrote it")
            self._sessions[key] = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def decode(self, path: str | Path) -> np.ndarray:
        """One image as the run's cache stores it; :class:`~fer_lightning.data.images.UnreadableImage` if it
        cannot be decoded."""
        return decode_resized(path, self.stored)

    def inputs(self, samples: Sequence[dict[str, str | Path | np.ndarray]]) -> dict[str, np.ndarray]:
        """The graph's uint8 (N, 3, size, size) input per camera, from image paths or :meth:`decode`'s arrays."""
        present = [m for m in self.modalities if m in samples[0]]
        out = {}
        for m in present:
            images = [s[m] if isinstance(s[m], np.ndarray) else self.decode(s[m]) for s in samples]
            out[m] = np.stack([fit_to_input(im, self.size).transpose(2, 0, 1) for im in images])
        return out

    def logits(self, samples: Sequence[dict[str, str | Path | np.ndarray]]) -> np.ndarray:
        feed = self.inputs(samples)
        return self.session(list(feed)).run(["logits"], {m: np.ascontiguousarray(x) for m, x in feed.items()})[0]

    def predict(self, samples: Sequence[dict[str, str | Path | np.ndarray]], calibrated: bool = True) -> np.ndarray:
        """Class probabilities (N, C), scaled by model.json's temperature unless ``calibrated`` is false."""
        return softmax(self.logits(samples), self.temperature if calibrated else None)
