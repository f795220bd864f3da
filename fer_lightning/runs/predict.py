"""Predictions for new images from a trained checkpoint: one sample as a JSON object, or a folder of images (or
visible/infrared pairs matched by file stem) into predictions.csv. ``python -m fer_lightning.predict`` runs
:func:`predict`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from fer_lightning.calibration import stored_temperature
from fer_lightning.data.face_crops import box_text
from fer_lightning.data.images import UnreadableImage, is_image_name
from fer_lightning.data.manifest import REJECTED, rejected_text
from fer_lightning.data.pairing import normalise_stem
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_text
from fer_lightning.modalities import CAMERAS
from fer_lightning.runs.onnx_predictor import OnnxPredictor
from fer_lightning.runs.predictor import NoFace, Predictor
from fer_lightning.runs.results import predictions_text
from fer_lightning.runs.run_checkpoint import load_run_checkpoint
from fer_lightning.runtime import rescale

BATCH = 32
NO_FACE_REASON = "no face found (the checkpoint's faces.missing=reject)"
# conf/model/ is a config group, so Hydra would read the command line's model=<file> as a choice of model config: the
# predict command renames it to this key before Hydra parses the command line (see :func:`command_line`)
MODEL_KEY = "onnx_model"


def command_line(argv: list[str]) -> list[str]:
    """``argv`` with ``model=<model.onnx>`` given as :data:`MODEL_KEY`."""
    return [f"{MODEL_KEY}={a.partition('=')[2]}" if a.startswith("model=") else a for a in argv]


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


def _readable(
    predictor: Predictor, samples: list[dict[str, Path]]
) -> tuple[list[dict[str, Path]], list[dict[str, np.ndarray]], list[tuple[str, str]], list]:
    """The samples whose every image decodes, their images as the network takes them, ``(file, reason)`` for each
    image of the others (an unreadable one, and its readable partner; with faces on, a sample without a face that
    the run rejected), and the face found in each kept sample (None with faces off)."""
    kept, decoded, rejected, faces = [], [], [], []
    for sample in samples:
        images, bad = {}, {}
        for m, path in sample.items():
            try:
                images[m] = predictor.decode(path)
            except UnreadableImage as exc:
                bad[m] = f"unreadable image ({exc.reason(path)})"
        if not bad:
            try:
                images, face = predictor.finish(images, sample)
            except NoFace:
                rejected += [(str(path), NO_FACE_REASON) for path in sample.values()]
                continue
            kept.append(sample)
            decoded.append(images)
            faces.append(face)
            continue
        for m, path in sample.items():
            other = next(iter(set(bad) - {m}), None)
            rejected.append((str(path), bad.get(m) or f"its {other} partner {sample[other].name} is unreadable"))
    return kept, decoded, rejected, faces


def _warn_skipped(unpaired: list[Path], unread: list[tuple[str, str]], no_face: list, rejected_csv: Path) -> None:
    """One warning line per kind of image predict_folder left out."""
    if unpaired:
        print(f"warning: {len(unpaired)} image(s) without a partner skipped, e.g. {unpaired[0]}", file=sys.stderr)
    if unread:
        file, reason = unread[0]
        print(
            f"warning: {len(unread)} unreadable image(s) skipped, e.g. {file} ({reason}); each is listed in "
            f"{rejected_csv}",
            file=sys.stderr,
        )
    if no_face:
        print(
            f"warning: {len(no_face)} image(s) without a face skipped (the checkpoint's faces.missing=reject), e.g. "
            f"{no_face[0][0]}; each is listed in {rejected_csv}",
            file=sys.stderr,
        )


def predict_folder(predictor: Predictor, input_dir: Path, output: Path, temperature: float | None = None) -> Path:
    """predictions.csv for every readable sample of ``input_dir``, and rejected.csv (``file, reason``) beside it for
    every image left out (unreadable, or without a partner); refused only when no sample is readable. Probabilities
    are scaled by ``temperature`` (None: as the model gives them)."""
    samples, unpaired = collect_inputs(input_dir, predictor.modalities)
    rejected: list[tuple[str, str]] = []
    for path in unpaired:
        other = next(m for m in predictor.modalities if m != path.relative_to(input_dir).parts[0])
        rejected.append((str(path), f"no {other} image with the same file stem"))
    kept, probs, faces = [], [], []
    for i in range(0, len(samples), BATCH):
        readable, decoded, unreadable, found = _readable(predictor, samples[i : i + BATCH])
        kept += readable
        faces += found
        rejected += unreadable
        if decoded:
            probs.append(predictor.predict_batch(decoded))
    unread = [r for r in rejected if r[1].startswith("unreadable")]
    no_face = [r for r in rejected if r[1] == NO_FACE_REASON]
    if not kept and not unread:
        raise FERError(
            f"input_dir={input_dir}: no face found in any sample ({len(no_face)} image(s)), and the checkpoint's run "
            "rejects such samples (faces.missing=reject); see docs/faces.md"
        )
    if not kept:
        file, reason = unread[0]
        raise FERError(
            f"input_dir={input_dir}: no sample could be read ({len(unread)} unreadable image(s), e.g. {file}: "
            f"{reason}); replace them with images Pillow can open"
        )
    rejected_csv = output.with_name(REJECTED)
    _warn_skipped(unpaired, unread, no_face, rejected_csv)
    ids = [str(s[predictor.modalities[0]].relative_to(input_dir)) for s in kept]
    paths = {m: [str(s[m]) for s in kept] for m in predictor.modalities}
    if predictor.faces is not None:  # where the face was found, as manifest.csv's face columns say it
        paths["face"] = [f.status for f in faces]
        for m in predictor.modalities:
            paths[f"{m}_box"] = [box_text(getattr(f, f"{m}_box")) for f in faces]
    probs = rescale(np.concatenate([np.asarray(p) for p in probs]), temperature)
    text = predictions_text(ids, [None] * len(kept), probs, predictor.classes, paths)
    atomic_write_text(rejected_csv, rejected_text(rejected))
    atomic_write_text(output, text)
    summary = {"predictions": str(output), "n": len(kept), "unpaired": len(unpaired), "unreadable": len(unread)}
    if predictor.faces is not None:
        summary["no_face"] = len(no_face) // len(predictor.modalities)
    print(json.dumps({**summary, "rejected": str(rejected_csv)}))
    return output


def _predictor(cfg: DictConfig) -> tuple[Predictor, float | None]:
    """The checkpoint's (``ckpt_path=``) or the exported model's (``model=``) predictor, and the temperature it
    applies: the one evaluate calibrate=temperature stored (model.json carries it), unless ``calibrated=false``."""
    ckpt, model = cfg.get("ckpt_path"), cfg.get(MODEL_KEY)
    if ckpt and model:
        raise FERError(f"pass either ckpt_path=<ckpt> or model=<model.onnx>, not both (got model={model})")
    if not ckpt and not model:
        raise FERError("ckpt_path is not set; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt or model=<model.onnx>")
    calibrated = bool(cfg.get("calibrated", True))
    if model:
        predictor = OnnxPredictor(str(model))
        return predictor, predictor.temperature if calibrated else None
    predictor = Predictor(load_run_checkpoint(ckpt), device=cfg.get("device") or "cpu")
    return predictor, stored_temperature(predictor.run.path) if calibrated else None


def predict(cfg: DictConfig) -> dict | Path:
    """Runs ``conf/predict.yaml``; returns the JSON object (one sample) or the predictions.csv path."""
    predictor, temperature = _predictor(cfg)
    predictor.check_faces(cfg)
    given = {m: cfg.get(m) for m in CAMERAS}
    if cfg.get("input_dir"):
        if any(given.values()):
            raise FERError("pass either input_dir=<dir> or visible=/infrared= images, not both")
        output = Path(cfg.output or Path(cfg.paths.output_dir) / "predictions.csv")
        return predict_folder(predictor, Path(cfg.input_dir).expanduser(), output, temperature)
    paths = predictor.check_inputs(given, allow_missing=bool(cfg.get("allow_missing")))
    images, face = predictor.load(paths)
    probs = rescale(np.asarray(predictor.predict_batch([images]))[0][None], temperature)[0]
    out = {**predictor.as_dict(probs), **{m: str(p) for m, p in paths.items()}, **predictor.face_dict(face)}
    if temperature is not None:
        out["temperature"] = temperature
    missing = [m for m in predictor.modalities if m not in paths]
    if missing:
        out["missing"] = missing
        out["predicted_from"] = list(paths)
    print(json.dumps(out, indent=2))
    return out
