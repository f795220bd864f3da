"""The robustness grid: checkpoints x corrupted modality x kind x severity, one accuracy (with its n and CI) each."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from omegaconf import DictConfig

from fer_lightning.data.corruptions import KINDS
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_text
from fer_lightning.metrics import classification_report
from fer_lightning.plots import robustness_figure
from fer_lightning.runs.checkpoint import load_run_checkpoint
from fer_lightning.runs.config import evaluation_config
from fer_lightning.runs.corruption import CorruptionSpec
from fer_lightning.runs.engine import Run

COLUMNS = ("model", "checkpoint", "modality", "kind", "severity", "n", "accuracy", "accuracy_lo", "accuracy_hi")


def _model_label(run_cfg: DictConfig, ckpt: Path, taken: set[str]) -> str:
    base = str(run_cfg.modality)
    if base == "fusion":
        base = f"fusion-{run_cfg.model.get('fusion', 'interleave')}"
    label, k = base, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    taken.add(label)
    return label


def robustness_grid(cfg: DictConfig) -> list[dict]:
    paths = [str(p) for p in (cfg.get("ckpt_paths") or [])] or ([str(cfg.ckpt_path)] if cfg.get("ckpt_path") else [])
    if not paths:
        raise FERError("ckpt_path is not set; pass ckpt_path=<ckpt> or ckpt_paths=[a.ckpt,b.ckpt]")
    kinds = [str(k) for k in cfg.kinds]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise FERError(f"kinds: unknown corruption {bad[0]!r}; use some of {', '.join(KINDS)}")
    severities = [int(s) for s in cfg.severities]
    rows: list[dict] = []
    taken: set[str] = set()
    for path in paths:
        ckpt = load_run_checkpoint(path)
        run_cfg, _ = evaluation_config(ckpt.config, cfg)
        run = Run.from_checkpoint(ckpt, run_cfg, allow_manifest_change=bool(cfg.get("allow_manifest_change")))
        label = _model_label(run_cfg, ckpt.path, taken)
        modalities = [str(m) for m in (cfg.get("modalities") or run.datamodule.modalities)]

        def measure(spec: CorruptionSpec | None, modality: str, kind: str, severity, run=run, label=label, ckpt=ckpt):
            outcome = run.test(str(cfg.split), corruption=spec)
            report = classification_report(outcome.labels, outcome.preds, outcome.classes)
            lo, hi = report["accuracy_ci95"]
            rows.append(
                dict(
                    zip(
                        COLUMNS,
                        (label, str(ckpt.path), modality, kind, severity, report["n"], report["accuracy"], lo, hi),
                        strict=True,
                    )
                )
            )

        measure(None, "-", "none", 0)
        for m in modalities:
            for kind in kinds:
                for s in severities:
                    measure(CorruptionSpec(**{m: kind}, severity=s, seed=int(cfg.corrupt_seed)), m, kind, s)
            if cfg.get("include_missing") and getattr(run.model, "supports_missing", False):
                measure(CorruptionSpec(missing=m), m, "missing", "")
    out = Path(cfg.paths.output_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "robustness.csv", buf.getvalue())
    robustness_figure(rows, out / "robustness.png")
    print(f"robustness: {len(rows)} rows -> {out / 'robustness.csv'}, {out / 'robustness.png'}")
    return rows
