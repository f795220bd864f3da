"""Predictions on image files with a checkpoint's model and its run's preprocessing, without a datamodule.

Images go through the path evaluation uses: decoded and resized as the cache stores them (with the run's face
settings: the face found in the frame, cropped), the evaluation transform, and the normalisation statistics saved
in the checkpoint, so a prediction equals evaluate's for the same image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fer_lightning.data.cache import decode_resized, stored_size
from fer_lightning.data.face_crops import FaceCropper, box_list, cropper, settings_json
from fer_lightning.data.images import load_rgb, resized
from fer_lightning.data.normalize import Normalizer
from fer_lightning.data.transforms import PairTransform
from fer_lightning.errors import FERError
from fer_lightning.faces import FaceResult
from fer_lightning.modalities import CAMERAS
from fer_lightning.runs.config import check_same_faces, task_overrides
from fer_lightning.runs.instantiate import network_from_checkpoint
from fer_lightning.runs.run_checkpoint import RunCheckpoint


class NoFace(FERError):
    """No face in a sample, for a checkpoint trained with ``faces.missing=reject``."""


class Predictor:
    """A checkpoint's model with its run's preprocessing; call :meth:`predict` with image paths per modality."""

    def __init__(self, run: RunCheckpoint, device: str = "cpu"):
        self.run = run
        self.device = torch.device(device)
        state = run.datamodule_state
        if not state or not state.get("stats"):
            raise FERError(
                f"ckpt_path={run.path}: no normalisation statistics in the checkpoint; "
                "predict needs a checkpoint written by fer_lightning.train"
            )
        self.classes = list(state.get("classes") or run.classes)
        self.modalities = tuple(m for m in CAMERAS if m in state["stats"])
        self.stats = {m: tuple(v) for m, v in state["stats"].items()}
        self._normalizer = Normalizer()
        # the network alone: prediction needs no LightningModule
        self.model = network_from_checkpoint(run).to(self.device)
        dataset = run.config.dataset
        # the side the run's cache decoded to (cache_scale=auto depends on the source files, so it is stored)
        scale = dataset.get("cache_scale", 1.0)
        self.stored = int(state.get("cache_side") or stored_size(int(dataset.image_size), float(scale)))
        self.size = int(dataset.image_size)
        self.transform = PairTransform(self.modalities, self.size)
        self.faces: FaceCropper | None = cropper(state.get("faces"))

    def check_inputs(self, given: dict[str, str | None], allow_missing: bool = False) -> dict[str, Path]:
        """The images the model needs, as paths; a missing or surplus modality is one FERError line.

        With ``allow_missing``, a fusion model that can do without one modality (late, gated) takes the other.
        """
        need = [m for m in self.modalities if not given.get(m)]
        extra = [m for m in CAMERAS if given.get(m) and m not in self.modalities]
        if need and allow_missing and len(need) < len(self.modalities):
            if not getattr(self.model, "supports_missing", False):
                raise FERError(
                    f"allow_missing=true: this {self.run.modality} model ({getattr(self.model, 'fusion', None)}) "
                    f"cannot predict without {need[0]}; only late and gated fusion can, pass both images"
                )
            need = []
        if need or extra:
            want = " and ".join(f"{m}=<img>" for m in self.modalities)
            problem = f"missing {' and '.join(need)}" if need else f"it takes no {' or '.join(extra)} image"
            raise FERError(
                f"this checkpoint is a {self.run.modality} model ({problem}); pass {want}, or input_dir=<dir>"
            )
        paths = {m: Path(str(given[m])).expanduser() for m in self.modalities if given.get(m)}
        for m, p in paths.items():
            if p.is_dir():
                raise FERError(
                    f"{m}={p}: is a directory; pass one image file (python -m fer_lightning.predict also takes "
                    f"input_dir={p} for a folder)"
                )
            if not p.is_file():
                raise FERError(f"{m}={p}: no such image file")
        return paths

    def decode(self, path: Path) -> np.ndarray:
        """One image decoded and resized as the run's cache stores it, or with faces on the whole frame (:meth:`finish`
        crops it); :class:`UnreadableImage` when it cannot be."""
        return load_rgb(path) if self.faces is not None else decode_resized(path, self.stored)

    def finish(self, images: dict[str, np.ndarray], names: dict | None = None) -> tuple[dict, FaceResult | None]:
        """:meth:`decode`'s images as the network takes them, and the face found (None with faces off): with faces
        on, each camera's crop at the cached side. :class:`NoFace` where the run rejected such samples."""
        if self.faces is None:
            return images, None
        face = self.faces.locate(images)
        if face.status == "rejected":
            shown = " and ".join(str((names or {}).get(m, m)) for m in images)
            raise NoFace(
                f"no face found in {shown} (the checkpoint's run rejects such samples: faces.missing=reject); "
                "pass an image with a face in view"
            )
        return {m: resized(c, self.stored) for m, c in self.faces.crops(images, face).items()}, face

    def load(self, paths: dict[str, Path]) -> tuple[dict[str, np.ndarray], FaceResult | None]:
        """One sample's images as the network takes them, and the face found (:meth:`finish`)."""
        return self.finish({m: self.decode(p) for m, p in paths.items()}, paths)

    def ready(self, sample: dict[str, Path | np.ndarray]) -> dict[str, np.ndarray]:
        """A sample of paths loaded (:meth:`load`); one of arrays (:meth:`finish`'s) as it is."""
        if all(isinstance(v, np.ndarray) for v in sample.values()):
            return sample
        return self.load(sample)[0]

    def batch(self, samples: list[dict[str, Path | np.ndarray]]) -> dict[str, torch.Tensor]:
        """The normalised network input for samples of image paths (or :meth:`finish`'s arrays) per modality."""
        present = [m for m in self.modalities if m in samples[0]]
        transform = self.transform if len(present) == len(self.modalities) else PairTransform(present, self.size)
        tensors = []
        for sample in samples:
            images = self.ready({m: sample[m] for m in present})
            tensors.append(transform(images, seed=0))  # the evaluation transform draws nothing
        batch = {m: torch.stack([t[m] for t in tensors]).to(self.device) for m in present}
        return self._normalizer(batch, {m: self.stats[m] for m in present})

    @torch.no_grad()
    def predict_batch(self, samples: list[dict[str, Path | np.ndarray]]) -> torch.Tensor:
        """Class probabilities (N, C)."""
        return self.model(self.batch(samples))["logits"].float().softmax(dim=1).cpu()

    def predict(self, paths: dict[str, Path]) -> torch.Tensor:
        """Class probabilities (C,) for one sample."""
        return self.predict_batch([paths])[0]

    def check_faces(self, cfg) -> None:
        """Refuses a command line's ``faces`` settings other than the checkpoint's (one line)."""
        for line in task_overrides():
            if line.lstrip("+~").partition("=")[0].split(".")[0] == "faces":
                run = settings_json(self.faces.settings) if self.faces is not None else None
                check_same_faces(line, cfg.get("faces"), run, where=str(cfg.get("task_name") or "prediction"))

    def face_dict(self, face: FaceResult | None) -> dict:
        """predict's ``face`` (how it was found) and ``face_box`` (the box used per camera, in source pixels)."""
        if face is None:
            return {}
        boxes = {m: box_list(getattr(face, f"{m}_box")) for m in CAMERAS}
        return {"face": face.status, "face_box": boxes}

    def as_dict(self, probs: torch.Tensor) -> dict:
        return {
            # the predicted class, as predictions.csv's pred; "label" there is the true class
            "prediction": self.classes[int(probs.argmax())],
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probs.tolist(), strict=True)},
        }
