"""Maintainers' seed table (the README's fusion-mode comparison): test accuracy per model over training seeds,
paired against a baseline per seed.

    python tools/seed_table.py ROOT [--baseline interleave] [--conditions data/synthetic/conditions.csv]

ROOT holds one run dir per model and seed, named ``<model>_s<seed>`` (each with results.json and
predictions.csv, as ``fer_lightning.train`` writes them). For each model: mean ± std of test accuracy over seeds,
the mean per-seed paired difference to the baseline (the same seeds, the same test samples) with a t interval over
seeds, how often each run is right on the thermal-artifact and the dark / shadowed photo samples (summed over
seeds), and the median training wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats


def correct(run: Path) -> dict[str, bool]:
    with open(run / "predictions.csv", newline="") as f:
        # "prediction": the column's name before 2026-12-01, in runs measured then
        return {r["sample_id"]: r["label"] == r.get("pred", r.get("prediction")) for r in csv.DictReader(f)}


def subset_counts(right: dict[str, bool], ids: set[str]) -> tuple[int, int]:
    hits = [right[i] for i in ids if i in right]
    return sum(hits), len(hits)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--baseline", default="interleave")
    p.add_argument("--conditions", type=Path, default=None)
    args = p.parse_args()

    runs: dict[str, dict[int, Path]] = defaultdict(dict)
    for run in sorted(args.root.glob("*_s[0-9]*")):
        if (run / "results.json").is_file() and (run / "predictions.csv").is_file():
            model, seed = run.name.rsplit("_s", 1)
            runs[model][int(seed)] = run
    subsets: dict[str, set[str]] = {}
    if args.conditions:
        with open(args.conditions, newline="") as f:
            rows = list(csv.DictReader(f))
        subsets["thermal artifact"] = {r["sample_id"] for r in rows if r["infrared_condition"]}
        subsets["dark / shadow photo"] = {r["sample_id"] for r in rows if r["visible_condition"] in ("dark", "shadow")}

    base = {s: correct(r) for s, r in runs.get(args.baseline, {}).items()}
    head = ["model", "test accuracy (mean ± std)", "seeds", "n", f"vs {args.baseline}, paired (t 95 % CI)"]
    print("| " + " | ".join([*head, *subsets, "median wall s"]) + " |")
    print("|" + "---|" * (len(head) + len(subsets) + 1))
    for model, seeds in sorted(runs.items()):
        results = {s: json.loads((r / "results.json").read_text()) for s, r in seeds.items()}
        acc = np.array([results[s]["test"]["accuracy"] for s in sorted(seeds)])
        n = {results[s]["test"]["n"] for s in seeds}
        spread = f"{acc.mean():.3f} ± {acc.std(ddof=1):.3f}" if len(acc) > 1 else f"{acc[0]:.3f}"
        right = {s: correct(r) for s, r in seeds.items()}
        paired = "–"
        shared = sorted(set(seeds) & set(base))
        if model != args.baseline and shared:
            diffs = []
            for s in shared:
                ids = right[s].keys() & base[s].keys()
                diffs.append(np.mean([right[s][i] for i in ids]) - np.mean([base[s][i] for i in ids]))
            d = np.array(diffs)
            if len(d) > 1:
                lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
                paired = f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] ({len(d)} seeds)"
            else:
                paired = f"{d[0]:+.3f} (1 seed)"
        cells = []
        for ids in subsets.values():
            counts = [subset_counts(right[s], ids) for s in seeds]
            cells.append(f"{sum(c[0] for c in counts)} / {sum(c[1] for c in counts)}")
        # the median: one slow run on a shared machine should not set a mode's figure
        wall = np.median([results[s].get("train_seconds", np.nan) for s in seeds])
        row = [model, spread, str(len(acc)), "/".join(map(str, sorted(n))), paired, *cells, f"{wall:.0f}"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
