"""``python -m fer_lightning.predict ckpt_path=<ckpt> visible=<img> infrared=<img>`` or ``input_dir=<dir>``.

One sample prints a JSON object (label and the probability of each class); ``input_dir`` predicts every image
(single-modality model) or every visible/infrared pair (fusion model: ``<dir>/visible/`` and ``<dir>/infrared/``,
paired by file stem) and writes predictions.csv. Images go through the exact path evaluation uses: decoded and
resized as the cache stores them, the evaluation transform, and the normalisation statistics saved in the
checkpoint, so a prediction equals evaluate's for the same image.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from fer_lightning import resolvers  # noqa: F401  (registers the config resolvers)
from fer_lightning.cli import quiet_libraries, report_errors
from fer_lightning.data.cache import decode_resized, stored_size
from fer_lightning.data.datamodules import ManifestDataModule
from fer_lightning.data.images import is_image_name
from fer_lightning.data.pairing import normalise_stem
from fer_lightning.data.transforms import PairTransform
from fer_lightning.errors import FERError
from fer_lightning.evaluate import RunCheckpoint, build_model_from_run, load_checkpoint
from fer_lightning.io import atomic_write_text
from fer_lightning.train import build_datamodule

MODALITIES = ("visible", "infrared")
BATCH = 32


class Predictor:
    """A checkpoint's model with its run's preprocessing; call :meth:`predict` with image paths per modality."""

    def __init__(self, run: RunCheckpoint, device: str = "cpu"):
        self.run = run
        self.device = torch.device(device)
        self.datamodule: ManifestDataModule = build_datamodule(run.config.dataset)  # settings only: no I/O
        state = run.datamodule_state
        if state is None or not state.get("stats"):
            raise FERError(
                f"ckpt_path={run.path}: no normalisation statistics in the checkpoint; "
                "predict needs a checkpoint written by fer_lightning.train"
            )
        self.datamodule.load_state_dict({k: v for k, v in state.items() if k != "manifest_sha1"})
        self.classes = list(state.get("classes") or run.classes)
        self.modalities = self.datamodule.modalities
        self.model = build_model_from_run(run, self.classes).to(self.device)
        dm = self.datamodule
        self.stored = stored_size(dm.image_size, getattr(dm, "cache_scale", 1.0))
        self.transform = PairTransform(self.modalities, dm.image_size)

    def check_inputs(self, given: dict[str, str | None]) -> dict[str, Path]:
        """The images the model needs, as paths; a missing or surplus modality is one FERError line."""
        need = [m for m in self.modalities if not given.get(m)]
        extra = [m for m in MODALITIES if given.get(m) and m not in self.modalities]
        kind = f"{self.run.modality} model"
        if need or extra:
            want = " and ".join(f"{m}=<img>" for m in self.modalities)
            problem = f"missing {' and '.join(need)}" if need else f"it takes no {' or '.join(extra)} image"
            raise FERError(f"this checkpoint is a {kind} ({problem}); pass {want}, or input_dir=<dir>")
        paths = {m: Path(str(given[m])).expanduser() for m in self.modalities}
        for m, p in paths.items():
            if not p.is_file():
                raise FERError(f"{m}={p}: no such image file")
        return paths

    @torch.no_grad()
    def predict_batch(self, samples: list[dict[str, Path]]) -> torch.Tensor:
        """Class probabilities (N, C) for samples of image paths per modality."""
        tensors = []
        for paths in samples:
            images = {m: decode_resized(paths[m], self.stored) for m in self.modalities}
            tensors.append(self.transform(images, seed=0))  # the evaluation transform draws nothing
        batch = {m: torch.stack([t[m] for t in tensors]).to(self.device) for m in self.modalities}
        return self.model(self.datamodule.normalize(batch)).float().softmax(dim=1).cpu()

    def predict(self, paths: dict[str, Path]) -> torch.Tensor:
        """Class probabilities (C,) for one sample."""
        return self.predict_batch([paths])[0]

    def as_dict(self, probs: torch.Tensor) -> dict:
        return {
            "label": self.classes[int(probs.argmax())],
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probs.tolist(), strict=True)},
        }


def _images(folder: Path) -> dict[str, Path]:
    """Images under ``folder`` keyed by their path relative to it with the stem normalised."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and is_image_name(p.name) and not p.name.startswith("."):
            rel = p.relative_to(folder)
            out[str(rel.parent / normalise_stem(rel.name))] = p
    return out


def collect_inputs(input_dir: Path, modalities: tuple[str, ...]) -> tuple[list[dict[str, Path]], list[Path]]:
    """Samples found in ``input_dir`` and the files left without a partner."""
    if not input_dir.is_dir():
        raise FERError(f"input_dir={input_dir}: no such folder")
    if len(modalities) == 1:
        (m,) = modalities
        sub = input_dir / m
        found = _images(sub if sub.is_dir() else input_dir)
        if not found:
            raise FERError(f"input_dir={input_dir}: no image files found")
        return [{m: p} for p in found.values()], []
    folders = {m: input_dir / m for m in modalities}
    missing = [str(p) for p in folders.values() if not p.is_dir()]
    if missing:
        raise FERError(
            f"input_dir={input_dir}: a fusion model needs {' and '.join(missing)} (pairs matched by file stem)"
        )
    found = {m: _images(p) for m, p in folders.items()}
    keys = sorted(set(found["visible"]) & set(found["infrared"]))
    if not keys:
        raise FERError(f"input_dir={input_dir}: no visible/infrared pair with matching file stems")
    unpaired = [p for m in modalities for k, p in found[m].items() if k not in keys]
    return [{m: found[m][k] for m in modalities} for k in keys], unpaired


def predict(cfg: DictConfig) -> dict | Path:
    """Runs ``conf/predict.yaml``; returns the JSON object (one sample) or the predictions.csv path."""
    predictor = Predictor(load_checkpoint(cfg.get("ckpt_path")), device=cfg.get("device") or "cpu")
    given = {m: cfg.get(m) for m in MODALITIES}
    if cfg.get("input_dir"):
        if any(given.values()):
            raise FERError("pass either input_dir=<dir> or visible=/infrared= images, not both")
        samples, unpaired = collect_inputs(Path(cfg.input_dir).expanduser(), predictor.modalities)
        if unpaired:
            print(f"warning: {len(unpaired)} image(s) without a partner skipped, e.g. {unpaired[0]}", file=sys.stderr)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*predictor.modalities, "label", *(f"p_{c}" for c in predictor.classes)])
        probs = torch.cat([predictor.predict_batch(samples[i : i + BATCH]) for i in range(0, len(samples), BATCH)])
        for paths, p in zip(samples, probs, strict=True):
            out = predictor.as_dict(p)
            writer.writerow(
                [
                    *(str(paths[m]) for m in predictor.modalities),
                    out["label"],
                    *(f"{p:.6f}" for p in out["probabilities"].values()),
                ]
            )
        path = Path(cfg.output or Path(cfg.paths.output_dir) / "predictions.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, buf.getvalue())
        print(json.dumps({"predictions": str(path), "n": len(samples), "unpaired": len(unpaired)}))
        return path
    paths = predictor.check_inputs(given)
    out = {**predictor.as_dict(predictor.predict(paths)), **{m: str(p) for m, p in paths.items()}}
    print(json.dumps(out, indent=2))
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@report_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    predict(cfg)


if __name__ == "__main__":
    main()
