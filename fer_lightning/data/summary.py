"""Reading a prepared dataset back: its counts per class, modality and split, and the fusion check's message."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fer_lightning.data.assemble import STATE
from fer_lightning.data.manifest import MANIFEST, REJECTED, read_manifest
from fer_lightning.data.near_duplicates import LISTING
from fer_lightning.data.pairing import describe_unpaired
from fer_lightning.data.split_drawing import SPLITS
from fer_lightning.modalities import CAMERAS


def unpaired_message(manifest: Path, rows: list[dict]) -> str:
    """One line for fusion runs on a manifest with single-modality rows, listing them per class."""
    by_class: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"visible": [], "infrared": []})
    for r in rows:
        for m in CAMERAS:
            if r[m] and not all(r[x] for x in CAMERAS):
                # the sample id is the source image's path: r[m] may be its 8-bit copy (converted/<name>.png)
                by_class[r["label"]][m].append(Path(r["sample_id"]).name)
    parts = [describe_unpaired(label, sides["visible"], sides["infrared"]) for label, sides in sorted(by_class.items())]
    return (
        f"{manifest}: modality=fusion needs every image paired, but some have no partner: "
        f"{'; '.join(parts)}; "
        "add the missing files and prepare again, or train with modality=visible or modality=infrared"
    )


def near_duplicate_line(info: dict | None) -> str:
    """The summary's line on near-duplicates (prepare.json's ``near_duplicates``)."""
    if not info:
        return (
            "near-duplicates: not checked (dataset.split.near_duplicates=off kept a manifest prepared before the "
            "check); group or warn checks them"
        )
    found = (
        f"{info['clusters']} cluster(s) holding {info['samples_in_clusters']} samples ({100 * info['share']:.1f} %), "
        f"the largest {info['largest']}"
        if info["clusters"]
        else "none"
    )
    mode = {
        "group": "each cluster stays in one split",
        "warn": f"the split may cut clusters (listed in {LISTING} when it does)",
        "off": "not used by the split",
    }.get(info.get("mode"), "")
    return (
        f"near-duplicates: {found}; threshold {info['threshold']:g} (docs/near-duplicates.md); "
        f"dataset.split.near_duplicates={info.get('mode')}: {mode}"
    )


def faces_line(faces: dict | None) -> str:
    """How the face settings prepared last found the faces (docs/faces.md); empty with faces off."""
    record = (faces or {}).get("prepared", {}).get((faces or {}).get("current"))
    if not record:
        return ""
    counts = ", ".join(f"{n} {status}" for status, n in record["counts"].items())
    transform = record.get("transform")
    pairs = f"; visible->infrared transform from {transform['n']} pairs" if transform and transform.get("n") else ""
    return f"faces={record['settings']['mode']} ({faces['current']}): {counts}{pairs} (manifest.csv's face column)"


def _reason_kind(reason: str) -> str:
    return reason.partition(" (")[0]


def summary(root: Path, classes: list[str] | None = None) -> dict:
    """Counts from the files of a prepared dataset: ``{"counts": {(class, modality, split): n}, ...}``."""
    rows = read_manifest(root / MANIFEST)
    counts: Counter[tuple[str, str, str]] = Counter()
    single: Counter[str] = Counter()  # images without a partner: used by that modality's runs, not by fusion
    for r in rows:
        for m in CAMERAS:
            if r[m]:
                counts[r["label"], m, r["split"]] += 1
        if all(r[m] for m in CAMERAS):
            counts[r["label"], "pairs", r["split"]] += 1
        else:
            single[next(m for m in CAMERAS if r[m])] += 1
    rejected: Counter[str] = Counter()
    if (root / REJECTED).is_file():
        with open(root / REJECTED, newline="") as f:
            rejected.update(_reason_kind(r["reason"]) for r in csv.DictReader(f))
    try:
        state = json.loads((root / STATE).read_text())
    except (OSError, ValueError):
        state = {}
    found = sorted({r["label"] for r in rows})
    ordered = [c for c in classes or [] if c in found] + [c for c in found if c not in (classes or [])]
    return {
        "rows": len(rows),
        "classes": ordered,
        "counts": counts,
        "rejected": rejected,
        "single_modality": single,
        "warnings": state.get("warnings", []),
        "source": state.get("source", ""),
        "near_duplicates": state.get("near_duplicates"),
        "faces": state.get("faces"),
    }


def print_dataset_summary(root: Path, name: str, classes: list[str] | None = None, console=None) -> dict:
    """Prints a table of counts per class x modality x split, then the rejected files by reason."""
    console = console or Console()
    info = summary(root, classes)
    counts = info["counts"]
    modalities = [m for m in (*CAMERAS, "pairs") if any(k[1] == m for k in counts)]
    console.print(f"{name}: prepared in {root}", soft_wrap=True, markup=False)
    table = Table(title=f"{name}: {info['rows']} samples")
    table.add_column("class")
    table.add_column("modality")
    for s in (*SPLITS, "total"):
        table.add_column(s, justify="right")
    for c in info["classes"]:
        for i, m in enumerate(modalities):
            n = [counts[c, m, s] for s in SPLITS]
            table.add_row(c if i == 0 else "", m, *map(str, n), str(sum(n)), end_section=i == len(modalities) - 1)
    for m in modalities:
        n = [sum(v for k, v in counts.items() if k[1] == m and k[2] == s) for s in SPLITS]
        table.add_row("all" if m == modalities[0] else "", m, *map(str, n), str(sum(n)))
    console.print(table)
    if info["rejected"]:
        rej = Table(title=f"rejected: {sum(info['rejected'].values())} files")
        rej.add_column("reason")
        rej.add_column("files", justify="right")
        for reason, n in sorted(info["rejected"].items(), key=lambda kv: (-kv[1], kv[0])):
            rej.add_row(reason, str(n))
        console.print(rej)
        console.print(f"each file and its reason: {root / REJECTED}", soft_wrap=True, markup=False)
    else:
        console.print("rejected: none")
    for m, n in sorted(info["single_modality"].items()):
        other = next(x for x in CAMERAS if x != m)
        console.print(
            f"single-modality: {n} {m} image(s) with no {other} partner, used by modality={m} runs "
            "(fusion needs pairs)",
            soft_wrap=True,
            markup=False,
        )
    console.print(near_duplicate_line(info["near_duplicates"]), soft_wrap=True, markup=False)
    if faces_line(info["faces"]):
        console.print(faces_line(info["faces"]), soft_wrap=True, markup=False)
    if info["warnings"]:  # each was logged when the dataset was checked
        console.print(f"warnings: {len(info['warnings'])} (logged above, kept in {root / STATE})", soft_wrap=True)
    return info
