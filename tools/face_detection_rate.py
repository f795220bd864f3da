"""Share of synthetic scenes whose planted face each camera's detector finds (IoU >= 0.5), and ms per image.

    python tools/face_detection_rate.py [--n 100] [--image-size 80] [--face-scale 0.5] [--warm-distractors 1]
                                        [--seed 0] [--visible-detector dlib_skin]   # one JSON line

The scenes are drawn by the synthetic generator (n_subjects = n / 5, one sample per class) into a temporary folder;
the planted boxes come from its planted_faces.csv. Each share carries a Wilson 95 % interval. ``without_failure``
leaves out the scenes where the generator spoiled that camera on purpose (bad light for visible, sensor artifacts
for infrared, conditions.csv); ``pair`` is what locate_pair gives with both cameras and the transform estimated
from the scenes where both found a face.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import binomtest

from fer_lightning.data.synthetic import CONDITIONS, PLANTED_FACES, generate
from fer_lightning.faces import FaceSettings, detect_thermal, detect_visible, estimate_transform, locate_pair
from fer_lightning.faces.blobs import iou

CONDITION = {"visible": "visible_condition", "infrared": "infrared_condition"}


def share(hits: list[bool]) -> dict:
    ci = binomtest(sum(hits), len(hits)).proportion_ci(method="wilson")
    return {"n": len(hits), "share": round(sum(hits) / len(hits), 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def load(root: Path) -> list[dict]:
    """One dict per scene: its images, planted boxes and each camera's designed failure (conditions.csv)."""
    with open(root / PLANTED_FACES, newline="") as f:
        planted = {r["file"]: tuple(float(r[k]) for k in ("x0", "y0", "x1", "y1")) for r in csv.DictReader(f)}
    with open(root / CONDITIONS, newline="") as f:
        conditions = {r["sample_id"]: r for r in csv.DictReader(f)}
    scenes = []
    for name in sorted(n for n in planted if n.startswith("visible/")):
        other = "infrared/" + name.removeprefix("visible/")
        scene = {"files": {"visible": name, "infrared": other}, "condition": conditions[Path(name).stem]}
        for camera, file in scene["files"].items():
            scene[camera] = np.asarray(Image.open(root / file).convert("RGB"))
            scene[camera + "_box"] = planted[file]
        scenes.append(scene)
    return scenes


def rate(scenes: list[dict], camera: str, settings: FaceSettings) -> dict:
    """Share found on every scene and on the scenes without the camera's designed failure; ms per image."""
    detect = detect_visible if camera == "visible" else detect_thermal
    hits, clean, seconds, missed = [], [], 0.0, []
    for scene in scenes:
        start = time.perf_counter()
        found = detect(scene[camera], settings)
        seconds += time.perf_counter() - start
        hits.append(bool(found) and iou(found[0].box, scene[camera + "_box"]) >= 0.5)
        if not scene["condition"][CONDITION[camera]]:
            clean.append(hits[-1])
        if not hits[-1]:
            missed.append(scene["files"][camera])
        scene[camera + "_found"] = found[0].box if found else None
    return {**share(hits), "without_failure": share(clean), "ms_per_image": round(1000 * seconds / len(hits), 2),
            "missed": missed}  # fmt: skip


def pair_rate(scenes: list[dict], settings: FaceSettings) -> dict:
    """With the transform estimated from the scenes where both cameras found a face, the share of scenes where
    locate_pair's box (found or mapped) matches the planted one, per camera, and the statuses."""
    both = [s for s in scenes if s["visible_found"] and s["infrared_found"]]
    transform = estimate_transform([s["visible_found"] for s in both], [s["infrared_found"] for s in both])
    hits: dict[str, list[bool]] = {"visible": [], "infrared": []}
    statuses: dict[str, int] = {}
    for scene in scenes:
        result = locate_pair(scene["visible"], scene["infrared"], settings, transform)
        statuses[result.status] = statuses.get(result.status, 0) + 1
        for camera, box in (("visible", result.visible_box), ("infrared", result.infrared_box)):
            hits[camera].append(box is not None and iou(box, scene[camera + "_box"]) >= 0.5)
    return {"transform": transform.to_json(), "statuses": statuses, **{c: share(h) for c, h in hits.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="scenes (rounded up to a multiple of 5)")
    parser.add_argument("--image-size", type=int, default=80)
    parser.add_argument("--face-scale", type=float, default=0.5)
    parser.add_argument("--warm-distractors", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--visible-detector", default=FaceSettings().visible_detector)
    parser.add_argument("--show-missed", action="store_true", help="list the files each camera missed")
    args = parser.parse_args(argv)
    settings = FaceSettings(mode="detect", visible_detector=args.visible_detector)
    knobs = {"face_scale": args.face_scale, "warm_distractors": args.warm_distractors}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, n_subjects=math.ceil(args.n / 5), samples_per_class=1, image_size=args.image_size,
                 seed=args.seed, difficulty=knobs)  # fmt: skip
        result = {"scenes": math.ceil(args.n / 5) * 5, "image_size": args.image_size, "seed": args.seed, **knobs}
        result["visible_detector"] = settings.visible_detector
        scenes = load(root)
        for camera in ("visible", "infrared"):
            result[camera] = rate(scenes, camera, settings)
            if not args.show_missed:
                del result[camera]["missed"]
        result["pair"] = pair_rate(scenes, settings)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
