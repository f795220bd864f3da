"""The table of tools/small_data_study.sh: test accuracy mean ± std over seeds per job, n, wall time per run.

    python tools/small_data_table.py [logs/small]

For the reference loop it also gives the accuracy the other tie rule would have had (same runs), and for every
job how many runs had a tie for the best validation accuracy.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats


def tied(run: Path) -> bool:
    """Whether the best validation accuracy was reached at more than one validation check."""
    result = run / "result.json"
    if result.is_file():
        return len(json.loads(result.read_text())["tied_epochs"]) > 1
    with open(run / "csv" / "metrics.csv", newline="") as f:
        val = [float(r["val/accuracy"]) for r in csv.DictReader(f) if r.get("val/accuracy")]
    return sum(v == max(val) for v in val) > 1


def seconds(run: Path) -> dict:
    """Wall and CPU (user + system) seconds of the run's command, where recorded."""
    timed = (run / "time").read_text().split() if (run / "time").is_file() else []
    if len(timed) >= 3:  # an interrupted /usr/bin/time leaves the file empty
        wall, user, system = (float(v) for v in timed[-3:])
        return {"wall": wall, "cpu": user + system}
    if (run / "wall_seconds").is_file():
        return {"wall": float((run / "wall_seconds").read_text())}
    return {}


def load(run: Path) -> dict | None:
    if (run / "result.json").is_file():
        r = json.loads((run / "result.json").read_text())
        out = {"acc": r["accuracy"], "n": r["n"], "earlier": r["accuracy_tie_earlier"]}
    elif (run / "results.json").is_file():
        r = json.loads((run / "results.json").read_text())
        out = {"acc": r["test"]["accuracy"], "n": r["test"]["n"]}
    else:
        return None
    return {**out, **seconds(run), "tied": tied(run)}


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def main(root: Path) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    for run in sorted(root.glob("*-s*")):
        job, seed = run.name.rsplit("-s", 1)
        if (r := load(run)) is not None:
            runs[job].append({**r, "seed": seed})
    print("| job | test accuracy (mean ± std) | seeds | n | wall s / run | CPU s / run | tied best val | earlier tie |")
    print("|---|---|---|---|---|---|---|---|")
    for job, rs in sorted(runs.items()):
        walls, cpus = ([r[k] for r in rs if k in r] for k in ("wall", "cpu"))
        earlier = mean_std([r["earlier"] for r in rs]) if "earlier" in rs[0] else "–"
        print(
            f"| {job} | {mean_std([r['acc'] for r in rs])} | {len(rs)} | {rs[0]['n']} | "
            f"{np.mean(walls):.0f} | {f'{np.mean(cpus):.0f}' if cpus else '–'} | "
            f"{sum(r['tied'] for r in rs)}/{len(rs)} | {earlier} |"
        )
    paired(runs)


def paired(runs: dict[str, list[dict]], against: str = "ref") -> None:
    """Each job against the reference loop on the seeds both ran: the mean per-seed difference with its paired
    95 % t interval, and Welch's p over the two sets of runs."""
    base = {r["seed"]: r["acc"] for r in runs.get(against, [])}
    print(f"\n| job | seeds paired with {against} | difference (95 % CI, paired t) | Welch p | CPU ratio |")
    print("|---|---|---|---|---|")
    for job, rs in sorted(runs.items()):
        shared = [r for r in rs if r["seed"] in base]
        if job == against or len(shared) < 2:
            continue
        diff = np.array([r["acc"] - base[r["seed"]] for r in shared])
        lo, hi = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
        p = stats.ttest_ind([r["acc"] for r in rs], list(base.values()), equal_var=False).pvalue
        cpu = [r["cpu"] for r in shared if "cpu" in r]
        base_cpu = [r["cpu"] for r in runs[against] if "cpu" in r]
        ratio = f"{np.mean(cpu) / np.mean(base_cpu):.2f}" if cpu and base_cpu else "–"
        print(f"| {job} | {len(diff)} | {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | {p:.3f} | {ratio} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "logs/small"))
