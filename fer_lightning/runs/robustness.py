"""The robustness grid: checkpoints x corrupted modality x kind x severity, one accuracy (with its n and CI) and its
calibration (ECE with its CI, NLL, Brier) each; with ``calibrate=temperature``, after one temperature per checkpoint
fitted on its clean validation split."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from fer_lightning.calibration import calibration_report
from fer_lightning.data.corruptions import KINDS, SEVERITIES
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_text
from fer_lightning.metrics import classification_report, format_with_ci
from fer_lightning.modalities import CAMERAS
from fer_lightning.plots import robustness_figure
from fer_lightning.runs import calibrate
from fer_lightning.runs.batch_corruption import CorruptionSpec
from fer_lightning.runs.config import evaluation_config
from fer_lightning.runs.engine import Run
from fer_lightning.runs.instantiate import eval_trainer
from fer_lightning.runs.results import condition
from fer_lightning.runs.run_checkpoint import load_run_checkpoint
from fer_lightning.validation import Number

# corrupt_seed: seeds every sample's corruption draw
CORRUPT_SEED = Number(int, 0)

COLUMNS = (
    "model",
    "checkpoint",
    "modality",
    "kind",
    "severity",
    "n",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "ece",
    "ece_lo",
    "ece_hi",
    "nll",
    "brier",
    "temperature",
)


def _model_label(run_cfg: DictConfig, taken: set[str]) -> str:
    base = str(run_cfg.modality)
    if base == "fusion":
        base = f"fusion-{run_cfg.model.get('fusion', 'interleave')}"
    label, k = base, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    taken.add(label)
    return label


def _listed(cfg: DictConfig, key: str) -> list | None:
    """``key``'s values as a list (one value is a list of one), or None when null."""
    value = cfg.get(key)
    if value is None:
        return None
    return list(value) if isinstance(value, ListConfig | list | tuple) else [value]


def _typed(key: str, values: list) -> str:
    return f"{key}=[{','.join(map(str, values))}]"


def grid_settings(cfg: DictConfig) -> tuple[list[str], list[int], list[str] | None, int]:
    """The grid's kinds (None: every registered one), severities, modalities (None: every one the model reads)
    and seed, checked before any checkpoint is read; a bad value is one line naming the key as typed."""
    kinds = _listed(cfg, "kinds")
    if kinds is None:  # null: every registered corruption
        kinds = list(KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        what = f"unknown corruption {bad[0]!r}" if bad else "no corruption to test"
        raise FERError(f"{_typed('kinds', kinds)}: {what}; use some of {', '.join(KINDS)}, e.g. kinds=[noise,blur]")
    severities = _listed(cfg, "severities") or []
    bad = [s for s in severities if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES]
    if not severities or bad:
        what = f"{bad[0]!r} is not a severity" if bad else "no severity to test"
        raise FERError(
            f"{_typed('severities', severities)}: {what}; use integers from 0 (none) to 5 (worst), "
            "e.g. severities=[1,3,5]"
        )
    modalities = _listed(cfg, "modalities") or None
    bad = [m for m in modalities or () if m not in CAMERAS]
    if bad:
        raise FERError(
            f"{_typed('modalities', modalities)}: no such modality {bad[0]!r}; use some of "
            f"{', '.join(CAMERAS)}, or modalities=null for every one the model reads"
        )
    seed = CORRUPT_SEED.check("corrupt_seed", cfg.get("corrupt_seed"))
    return [str(k) for k in kinds], severities, modalities, seed


def robustness_grid(cfg: DictConfig) -> list[dict]:
    """One row per checkpoint x modality x corruption kind x severity (and per camera left out, with
    ``include_missing``): accuracy with its CI, calibration, n. Settings are checked before any checkpoint is read."""
    paths = [str(p) for p in (cfg.get("ckpt_paths") or [])] or ([str(cfg.ckpt_path)] if cfg.get("ckpt_path") else [])
    if not paths:
        raise FERError("ckpt_path is not set; pass ckpt_path=<ckpt> or ckpt_paths=[a.ckpt,b.ckpt]")
    kinds, severities, wanted, seed = grid_settings(cfg)
    method = calibrate.calibrate_method(cfg)
    rows: list[dict] = []
    taken: set[str] = set()
    for path in paths:
        ckpt = load_run_checkpoint(path)
        run_cfg, _ = evaluation_config(ckpt.config, cfg)
        run = Run.from_checkpoint(ckpt, run_cfg, allow_manifest_change=bool(cfg.get("allow_manifest_change")))
        label = _model_label(run_cfg, taken)
        modalities = wanted or list(run.datamodule.modalities)
        unread = [m for m in modalities if m not in run.datamodule.modalities]
        if unread:
            raise FERError(
                f"{_typed('modalities', modalities)}: {ckpt.path} is a {run_cfg.modality} model and reads no "
                f"{unread[0]} image; use modalities=[{','.join(run.datamodule.modalities)}] or null"
            )
        temperature = calibrate.fit_on_val(run).temperature if method else None

        # one labelled line per condition in place of a progress bar per test
        run.trainer = eval_trainer(run_cfg.trainer, str(run.output_dir), progress_bar=False)
        missing = bool(cfg.get("include_missing") and getattr(run.model, "supports_missing", False))
        conditions: list[tuple[CorruptionSpec | None, str, str, int | str]] = [(None, "-", "none", 0)]
        for m in modalities:
            conditions += [
                (CorruptionSpec(**{m: kind}, severity=s, seed=seed), m, kind, s) for kind in kinds for s in severities
            ]
            if missing:
                conditions.append((CorruptionSpec(missing=m), m, "missing", ""))
        for i, (spec, modality, kind, severity) in enumerate(conditions, 1):
            outcome = run.test(str(cfg.split), corruption=spec)
            if temperature is not None:
                outcome = calibrate.scaled(outcome, temperature)
            report = classification_report(outcome.labels, outcome.preds, outcome.classes)
            cal = calibration_report(outcome.labels, outcome.probs)
            values = (
                *(label, str(ckpt.path), modality, kind, severity, report["n"], report["accuracy"]),
                *report["accuracy_ci95"],
                *(cal["ece"], *cal["ece_ci95"], cal["nll"], cal["brier"], temperature),
            )
            rows.append(dict(zip(COLUMNS, values, strict=True)))
            what = condition(spec.record()).strip(" ()") if spec else "clean"
            accuracy = format_with_ci(report["accuracy"], report["accuracy_ci95"], report["n"])
            print(f"robustness {i}/{len(conditions)} {label}, {what}: accuracy {accuracy}", flush=True)
    out = Path(cfg.paths.output_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "robustness.csv", buf.getvalue())
    robustness_figure(rows, out / "robustness.png")
    print(f"robustness: {len(rows)} rows -> {out / 'robustness.csv'}, {out / 'robustness.png'}")
    return rows
