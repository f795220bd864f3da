"""A checkpoint as ``model.onnx`` + ``model.json``, checked against PyTorch on real inputs before it is written.

The graph takes uint8 NCHW RGB images (what the datamodule's loaders yield, before normalisation) and returns
logits: the run's normalisation is inside it, so a runtime feeds decoded pixels (:mod:`fer_lightning.runtime`).
Fusion modes that can predict without one camera (late, gated) get one extra graph per camera alone.

The parity check runs every graph in onnxruntime and the checkpoint's model in PyTorch (evaluate's path: the
datamodule's normalisation, then ``predict_step``) on the first ``parity_samples`` samples of the run's own split,
at a batch size other than the one traced (so a batch size frozen into the graph fails it), and refuses the export
when the largest absolute difference of any class probability exceeds ``tolerance`` (default :data:`TOLERANCE`).
Nothing is written unless every graph passes.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fer_lightning import calibration
from fer_lightning.errors import FERError, shortened
from fer_lightning.io import atomic_write_bytes, atomic_write_text, file_sha1
from fer_lightning.runs.config import evaluation_config
from fer_lightning.runs.engine import SPLITS, Run
from fer_lightning.runs.run_checkpoint import load_run_checkpoint
from fer_lightning.runtime import FORMAT, MODEL_JSON, softmax
from fer_lightning.validation import Number, checked

# fp32 on the CPU: measured differences are near 1e-7 (docs/deploy.md); 1e-4 leaves room for other CPUs and
# onnxruntime builds while still catching a wrong normalisation, a frozen batch size or a dropped branch
TOLERANCE = 1e-4
FORMATS = ("onnx",)
# the batch the graph is traced with; parity runs on a larger one
TRACE_BATCH = 2
# export's own keys
RULES = {
    "parity_samples": Number(int, TRACE_BATCH, low_open=True, hint=" (a batch other than the traced one)"),
    "tolerance": Number(
        float, 0, 1, low_open=True, high_open=True, fix=f"use a probability difference in (0, 1), e.g. {TOLERANCE}"
    ),
    "opset": Number(int, 14, fix="use an ONNX opset >= 14, e.g. 17"),
}


class OnnxGraph(nn.Module):
    """The network as exported: uint8 images of ``inputs`` -> normalised as the datamodule does -> logits.

    ``model``: the network alone (:mod:`fer_lightning.models.networks`), not its LightningModule."""

    def __init__(self, model: nn.Module, stats: dict[str, tuple], inputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.inputs = inputs
        for m in inputs:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in stats[m])
            # Normalizer's affine map, (x/255 - mean)/std = x * scale + shift
            self.register_buffer(f"scale_{m}", 1 / (255 * std))
            self.register_buffer(f"shift_{m}", -mean / std)

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        batch = {
            m: x.float() * getattr(self, f"scale_{m}") + getattr(self, f"shift_{m}")
            for m, x in zip(self.inputs, images, strict=True)
        }
        return self.model(batch)["logits"]


def graph_name(inputs: tuple[str, ...], all_inputs: tuple[str, ...]) -> str:
    """``model.onnx`` for the graph of every input, ``model.<a>+<b>.onnx`` for one that takes only ``inputs``."""
    return "model.onnx" if inputs == all_inputs else f"model.{'+'.join(inputs)}.onnx"


def _runtime():
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as exc:
        raise FERError(
            f"format=onnx: the export needs onnx and onnxruntime ({exc.name} is not installed); "
            "pip install 'fer-lightning[export]'"
        ) from exc
    return onnxruntime


def _check_settings(cfg: DictConfig) -> tuple[str, int, float, int]:
    fmt = str(cfg.get("format"))
    if fmt not in FORMATS:
        raise FERError(f"format={fmt}: use {' or '.join(FORMATS)}")
    split = str(cfg.get("split"))
    if split not in SPLITS:
        raise FERError(f"split={split}: the parity inputs come from one of {', '.join(SPLITS)}")
    n, tol, opset = (checked(RULES, key, cfg.get(key)) for key in ("parity_samples", "tolerance", "opset"))
    return split, n, tol, opset


def parity_batch(run: Run, split: str, n: int) -> dict[str, torch.Tensor]:
    """The first ``n`` samples of ``split`` as the datamodule's loader yields them (uint8, eval transform)."""
    dm = run.datamodule
    parts: list[dict] = []
    got = 0
    for batch in dm.eval_dataloader(split):
        parts.append(batch)
        got += len(batch["label"])
        if got >= n:
            break
    if not parts:
        raise FERError(f"split={split}: the run's {split} split is empty; export needs real inputs to check against")
    return {m: torch.cat([p[m] for p in parts])[:n] for m in dm.modalities}


def trace(graph: OnnxGraph, example: tuple[torch.Tensor, ...], opset: int, label: str) -> bytes:
    """The graph as ONNX bytes (the TorchScript exporter: it needs nothing beyond onnx, offline); a model that
    cannot be traced is one line naming its mode."""
    buf = io.BytesIO()
    names = list(graph.inputs)
    try:
        with warnings.catch_warnings():
            # the parity check below, at another batch size, is what tells a sound trace from a frozen one
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
            torch.onnx.export(
                graph,
                example,
                buf,
                dynamo=False,
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**{m: {0: "batch"} for m in names}, "logits": {0: "batch"}},
                opset_version=opset,
            )
    except Exception as exc:  # torch's exporter raises many types; each means the same: not traceable
        raise FERError(
            f"{label}: cannot be exported to ONNX ({type(exc).__name__}: {shortened(exc, 160)}); export another "
            "fusion mode or use the checkpoint with python -m fer_lightning.predict ckpt_path=..."
        ) from None
    return buf.getvalue()


def parity(onnx_bytes: bytes, graph: OnnxGraph, images: dict[str, torch.Tensor], run: Run, ort) -> float:
    """Largest |p_onnx - p_torch| over every sample and class; PyTorch via evaluate's own normalise + predict."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {m: images[m].numpy() for m in graph.inputs})[0]
    with torch.no_grad():
        reference = run.model.predict_step(run.datamodule.normalize(dict(images)), 0).double().numpy()
    return float(np.abs(softmax(logits) - reference).max())


def export_checkpoint(cfg: DictConfig) -> dict:
    """Runs ``conf/export.yaml``: writes the graphs and model.json into this command's run dir; returns model.json."""
    split, n, tolerance, opset = _check_settings(cfg)
    ort = _runtime()
    ckpt = load_run_checkpoint(cfg.get("ckpt_path"))
    run_cfg, _ = evaluation_config(ckpt.config, cfg)
    run = Run.from_checkpoint(ckpt, run_cfg, allow_manifest_change=bool(cfg.get("allow_manifest_change")))
    model, dm = run.model.cpu().eval(), run.datamodule
    fusion = getattr(model, "fusion", None)
    modalities = tuple(dm.modalities)
    input_sets = [modalities]
    if getattr(model, "supports_missing", False):
        input_sets += [(m,) for m in modalities]
    images = parity_batch(run, split, n)
    label = f"model.fusion={fusion}" if fusion else f"modality={dm.modality}"
    graphs, diffs, files = _checked_graphs(run, input_sets, images, label, split, opset, tolerance, ort)
    state = dict(ckpt.datamodule_state or {})
    sha1 = file_sha1(ckpt.path)
    meta = {
        "format": FORMAT,
        "classes": list(dm.classes),
        "modality": dm.modality,
        "fusion": fusion,
        "inputs": list(modalities),
        "graphs": graphs,
        "input": {"dtype": "uint8", "layout": "NCHW", "channels": "RGB", "range": [0, 255]},
        "input_size": int(dm.image_size),
        "cache_side": int(state.get("cache_side") or dm.cache_side),
        # the face step predict applies before the graph (data/face_crops.py); null: whole frames
        "faces": state.get("faces"),
        "normalization": {m: {"mean": list(dm.stats[m][0]), "std": list(dm.stats[m][1])} for m in modalities},
        "normalization_in_graph": True,
        "output": "logits",
        "temperature": calibration.stored_temperature(ckpt.path, sha1),
        "checkpoint": str(ckpt.path.resolve()),
        "checkpoint_sha1": sha1,
        "parity": {
            "split": split,
            "n": len(images[modalities[0]]),
            "max_abs_diff": max(diffs.values()),
            "per_graph": diffs,
            "tolerance": tolerance,
        },
        "opset": opset,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
    }
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    # model.json last: a runtime finds no model until every graph it names is in place
    atomic_write_text(out / MODEL_JSON, json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"model": str(out / graphs["+".join(modalities)]), **{k: meta[k] for k in ("parity",)}}))
    return meta


def _checked_graphs(
    run: Run,
    input_sets: list[tuple[str, ...]],
    images: dict[str, torch.Tensor],
    label: str,
    split: str,
    opset: int,
    tolerance: float,
    ort,
) -> tuple[dict[str, str], dict[str, float], dict[str, bytes]]:
    """One graph per set of inputs, traced and checked against PyTorch on ``images``: ``{inputs: file name}``,
    ``{inputs: largest probability difference}`` and ``{file name: ONNX bytes}``.

    Raises:
        FERError: a graph's difference is over ``tolerance`` (nothing is written)."""
    model, dm = run.model, run.datamodule
    modalities = tuple(dm.modalities)
    graphs, diffs, files = {}, {}, {}
    for inputs in input_sets:
        key = "+".join(inputs)
        # eval() before exporting: the exporter restores the wrapper's mode afterwards, to every submodule
        graph = OnnxGraph(model.network, dm.stats, inputs).eval()
        onnx_bytes = trace(graph, tuple(images[m][:TRACE_BATCH] for m in inputs), opset, f"{label} ({key})")
        diffs[key] = parity(onnx_bytes, graph, {m: images[m] for m in inputs}, run, ort)
        if not diffs[key] <= tolerance:
            raise FERError(
                f"{label} ({key}): ONNX and PyTorch probabilities differ by up to {diffs[key]:.2e} on "
                f"{len(images[inputs[0]])} {split} samples, over tolerance={tolerance:g}; nothing was written "
                "(report it with the checkpoint, or raise tolerance= knowingly)"
            )
        graphs[key] = graph_name(inputs, modalities)
        files[graphs[key]] = onnx_bytes
    return graphs, diffs, files
