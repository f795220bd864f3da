"""How far the near-duplicate threshold is from the pairs it must tell apart, on synthetic data with near-duplicates.

Draws a synthetic dataset whose samples have near-identical copies (the ``near_duplicates`` difficulty knob), scores
every pair of images of each camera as :mod:`fer_lightning.data.near_duplicates` does (without the coarse pass,
so that every pair is scored), and prints the distributions of a pair's distance (the smaller of its two cameras',
since either camera matching makes a pair; in units of the camera's median distance) for: a sample and its copy,
two copies of one sample, the same subject with the same expression (another draw), different subjects with the
same expression, and everything else. A measurement, not a product path:

    python scripts/near_duplicate_margin.py [--subjects 16] [--per-class 3] [--size 96] [--copies 2] [--seed 0]
    python scripts/near_duplicate_margin.py --difficulty default --copies 0 --subjects 60 --size 80  # dataset=synthetic
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_lightning.data import near_duplicates as nd  # noqa: E402
from fer_lightning.data.synthetic import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--copies", type=float, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intensity", type=float, nargs=2, default=(0.6, 1.0), help="synthetic_small's")
    parser.add_argument("--difficulty", default=None, help="'default': dataset=synthetic's knobs (no copies)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        difficulty = args.difficulty or {"near_duplicates": args.copies, "intensity": list(args.intensity)}
        rows = generate(
            root,
            n_subjects=args.subjects,
            samples_per_class=args.per_class,
            image_size=args.size,
            seed=args.seed,
            difficulty=difficulty,
        )
        n = len(rows)
        distance = np.full((n, n), np.inf, dtype=np.float32)
        passed = np.zeros((n, n), dtype=bool)
        for camera in ("visible", "infrared"):
            thumbs = nd.thumbnails(root, [(r[camera], root / r[camera]) for r in rows])
            i, j, d = nd.distances(thumbs, coarse_threshold=np.inf)
            distance[i, j] = np.minimum(distance[i, j], d)
            coarse_i, coarse_j, _ = nd.distances(thumbs)
            passed[coarse_i, coarse_j] = True
        found = nd.clusters(root, rows)
    iu = np.triu_indices(n, 1)
    base = np.array([r["sample_id"].split("_copy")[0] for r in rows])
    original = np.array(["_copy" not in r["sample_id"] for r in rows])
    subject = np.array([r["subject"] for r in rows])
    label = np.array([r["label"] for r in rows])
    same = {k: (v[:, None] == v[None, :])[iu] for k, v in (("base", base), ("subject", subject), ("label", label))}
    with_original = (original[:, None] | original[None, :])[iu]
    pair = distance[iu]
    groups = {
        "a sample and its copy": same["base"] & with_original,
        "two copies of one sample": same["base"] & ~with_original,
        "same subject, same expression": same["subject"] & same["label"] & ~same["base"],
        "different subjects, same expression": ~same["subject"] & same["label"],
        "all other pairs": ~same["base"] & ~(~same["subject"] & same["label"]),
    }
    print(
        f"{n} samples ({args.subjects} subjects x 5 classes x {args.per_class}, {args.copies:g} copies each), "
        f"{args.size} px, threshold {nd.THRESHOLD}"
    )
    print("| pairs | n | min | 1st pct | median | 99th pct | max | <= threshold |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mask in groups.items():
        x = pair[mask]
        if len(x):
            print(
                f"| {name} | {len(x)} | {x.min():.4f} | {np.percentile(x, 1):.4f} | {np.median(x):.4f} | "
                f"{np.percentile(x, 99):.4f} | {x.max():.4f} | {(x <= nd.THRESHOLD).sum()} |"
            )
    copies = pair[groups["a sample and its copy"]]
    for name in ("different subjects, same expression", "all other pairs"):
        closest = pair[groups[name]].min()
        if len(copies):
            print(
                f"margin to {name}: farthest sample-copy pair {copies.max():.4f}, closest such pair {closest:.4f} "
                f"({closest / copies.max():.1f} x)"
            )
    print(
        f"coarse pass keeps {passed[iu][same['base']].mean() if same['base'].any() else float('nan'):.4f} of the "
        f"copy pairs and {passed[iu].mean():.4f} of all pairs"
    )
    found = np.array(found)
    whole = np.mean(
        [len(set(found[base == b])) == 1 and (found[base == b][0] != "") == (args.copies > 0) for b in set(base)]
    )
    mixed = sum(len(set(subject[found == c])) > 1 for c in set(found) - {""})
    print(
        f"clusters: {len(set(found) - {''})}; samples with their copies in one cluster: {whole:.4f}; "
        f"clusters holding more than one subject: {mixed}; samples in clusters: {(found != '').mean():.4f}"
    )


if __name__ == "__main__":
    main()
