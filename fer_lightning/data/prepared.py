"""Build a prepared dataset (manifest.csv, rejected.csv, contact_sheet.png) from archives or a folder.

The images stay where they are (the manifest points at the extracted or user files, relative to the manifest);
only high-bit-depth images (16-bit thermal TIFFs) are written again, as 8-bit PNGs under ``converted/``, with
``dataset.sixteen_bit`` deciding the intensity mapping, so training, the contact sheet and the content hashes
all see the same pixels. Every image is decoded once to catch corrupt files; the result is cached in
``.scan.json`` by size and mtime, so a second run decodes nothing and rewrites nothing when nothing changed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fer_lightning.data.archives import (
    ARCHIVES,
    ExtractResult,
    _skip_reason,  # the archives' junk/non-image rules, applied to folder datasets as well
    collect_images,
    ensure_archives,
    extract_all,
)
from fer_lightning.data.images import _HIGH_BIT_MODES, UnreadableImage, load_rgb
from fer_lightning.data.manifest import (
    SPLITS,
    atomic_write_text,
    file_sha1,
    read_manifest,
    write_manifest,
)
from fer_lightning.data.pairing import PairingResult, natural_key, normalise_stem, pair_files
from fer_lightning.errors import FERError
from fer_lightning.io import remove_stale_temporaries

log = logging.getLogger(__name__)

MODALITIES = ("visible", "infrared")
SCAN_CACHE = ".scan.json"
STATE = "prepare.json"
REJECTED = "rejected.csv"
CONTACT_SHEET = "contact_sheet.png"
EXTRACTED = "extracted"
CONVERTED = "converted"
SIXTEEN_BIT_MODES = ("minmax", "fixed")
# The columns that identify the samples; split and fold are drawn afterwards by manifest.ensure_splits.
# subject is left out: the split step fills it from dataset.split.group_regex.
_SAMPLE_KEY = ("sample_id", "label", "visible", "infrared", "visible_sha1", "infrared_sha1")
_SCAN_VERSION = 1


@dataclass
class Sources:
    """What a dataset offers before checking: image files per modality and class, and files set aside.

    ``base`` is the folder sample ids are relative to; ``rejected`` holds ``(file, reason)`` rows for files
    that never became candidates (archive junk, files outside class folders).
    """

    images: dict[str, dict[str, list[Path]]]
    base: Path
    rejected: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    description: str = ""


@dataclass(frozen=True)
class ImageOptions:
    """How images are paired and converted (``dataset.pairing``, ``dataset.sixteen_bit[_range]``)."""

    pairing: str = "auto"
    sixteen_bit: str = "minmax"
    sixteen_bit_range: tuple[float, float] = (0, 65535)

    def __post_init__(self) -> None:
        if self.pairing not in ("auto", "strict"):
            raise FERError(f"dataset.pairing={self.pairing!r}: use auto or strict")
        if self.sixteen_bit not in SIXTEEN_BIT_MODES:
            raise FERError(f"dataset.sixteen_bit={self.sixteen_bit!r}: use minmax or fixed")
        lo, hi = self.sixteen_bit_range
        if not hi > lo:
            raise FERError(f"dataset.sixteen_bit_range={[lo, hi]}: need [low, high] with high > low")

    def to_json(self) -> dict:
        return {
            "pairing": self.pairing,
            "sixteen_bit": self.sixteen_bit,
            "sixteen_bit_range": [float(v) for v in self.sixteen_bit_range],
        }


@dataclass
class PrepareResult:
    root: Path
    rows: int
    changed: bool
    warnings: list[str]


# --------------------------------------------------------------------------------------------------
# Sources


def published_sources(name: str, extracted: list[tuple], extract_root: Path) -> Sources:
    """Sources from :func:`archives.extract_all`; labels come from the archive names."""
    rejected = [
        (f"{result.archive.name}/{entry}", reason) for _, result in extracted for entry, reason in result.skipped
    ]
    return Sources(
        images=collect_images(extracted),
        base=extract_root,
        rejected=rejected,
        warnings=_cross_check_labels(name, extracted),
        description=f"{len(extracted)} archives",
    )


def _cross_check_labels(name: str, extracted: list[tuple]) -> list[str]:
    """Class-named folders inside an archive must agree with the class in the archive's name."""
    classes = {s.label.casefold(): s.label for s in ARCHIVES.get(name, ())}
    warnings = []
    for spec, result in extracted:
        result: ExtractResult
        disagree: Counter[str] = Counter()
        for image in result.images:
            for folder in image.parts[:-1]:
                other = classes.get(normalise_stem(folder))
                if other is not None and other != spec.label:
                    disagree[folder] += 1
                    break
        for folder, n in disagree.items():
            warnings.append(
                f"{spec.name}: {n} image(s) are in a folder named {folder!r}, not {spec.label!r} as the "
                f"archive name says; they are labelled {spec.label!r}"
            )
    return warnings


def folder_sources(root: Path) -> Sources:
    """Sources from ``root/visible/<Class>/**`` and ``root/infrared/<Class>/**`` (any extension case)."""
    layout = "DIR/visible/<Class>/* and/or DIR/infrared/<Class>/*"
    if not root.is_dir():
        raise FERError(f"dataset.root={root}: no such folder; point it at a folder laid out as {layout}")
    found = {c.name.lower(): c for c in root.iterdir() if c.is_dir() and c.name.lower() in MODALITIES}
    # visible first: its class-folder spelling names the class when the two differ in case
    modality_dirs = {m: found[m] for m in MODALITIES if m in found}
    if not modality_dirs:
        raise FERError(f"dataset.root={root}: has neither a visible/ nor an infrared/ folder; lay it out as {layout}")
    images: dict[str, dict[str, list[Path]]] = {m: {} for m in MODALITIES}
    spelling: dict[str, str] = {}  # class folders match across modalities whatever their case
    rejected = []
    warnings = []
    for modality, folder in modality_dirs.items():
        for path in sorted(folder.rglob("*"), key=natural_key):
            if path.is_dir():
                continue
            parts = path.relative_to(folder).parts
            reason = "not in a class folder" if len(parts) == 1 else _skip_reason(parts)
            if reason is None and path.stat().st_size == 0:
                reason = "empty file"
            if reason is not None:
                rejected.append((path.as_posix(), reason))
                continue
            label = spelling.setdefault(parts[0].casefold(), parts[0])
            images[modality].setdefault(label, []).append(path)
        used = {label.casefold() for label in images[modality]}
        for class_dir in sorted(folder.iterdir(), key=natural_key):
            if class_dir.is_dir() and class_dir.name.casefold() not in used:
                warnings.append(f"{class_dir}: class folder holds no image; class {class_dir.name!r} is left out")
    if not any(images[m] for m in MODALITIES):
        raise FERError(f"dataset.root={root}: no images found; lay it out as {layout}")
    return Sources(images, root, rejected, warnings, description=f"folder {root}")


# --------------------------------------------------------------------------------------------------
# Scanning: content hash, mode and a full decode of every image, cached by size and mtime


def _scan_one(path: Path) -> dict:
    st = path.stat()
    entry = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha1": file_sha1(path),
        "mode": None,
        "error": None,
    }
    try:
        load_rgb(path)  # a full decode, as training will do, so truncated files show up now
        with Image.open(path) as img:
            entry["mode"] = img.mode
    except UnreadableImage as exc:
        cause = exc.__cause__
        detail = " ".join(str(cause).split()) if cause is not None else str(exc)
        # rejected.csv names the file already; the reason stays short and groups in the summary
        entry["error"] = detail.replace(f"'{path}'", "").replace(str(path), "").strip(" :") or "undecodable"
    return entry


class _ScanCache:
    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        self.entries: dict[str, dict] = data.get("files", {}) if data.get("version") == _SCAN_VERSION else {}
        self.dirty = False

    def scan(self, files: Iterable[Path]) -> dict[Path, dict]:
        out: dict[Path, dict] = {}
        todo = []
        for path in files:
            entry = self.entries.get(str(path))
            st = path.stat()
            if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
                out[path] = entry
            else:
                todo.append(path)
        if todo:
            log.info("checking %d image(s)", len(todo))
            # Decoding releases the GIL, so threads overlap it without pickling arrays between processes.
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                for path, entry in zip(todo, pool.map(_scan_one, todo), strict=True):
                    out[path] = self.entries[str(path)] = entry
            self.dirty = True
        return out

    def save(self) -> None:
        if self.dirty:
            atomic_write_text(self.path, json.dumps({"version": _SCAN_VERSION, "files": self.entries}))
            self.dirty = False


# --------------------------------------------------------------------------------------------------
# Building the prepared dataset


def _relative(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive (Windows): an absolute path still resolves from the manifest
        return path.as_posix()


def _shown(path: Path, root: Path) -> str:
    """How rejected.csv names a file: relative to the manifest inside the prepared folder, else absolute."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def _convert(path: Path, dest: Path, entry: dict, options: ImageOptions) -> bool:
    """Writes the 8-bit PNG of a high-bit image unless the current one is there; returns whether it wrote."""
    settings = [options.sixteen_bit, *options.sixteen_bit_range]
    done = entry.get("converted")
    if done and done.get("settings") == settings and dest.is_file() and file_sha1(dest) == done.get("sha1"):
        return False
    pixels = load_rgb(path, sixteen_bit=options.sixteen_bit, fixed_range=tuple(options.sixteen_bit_range))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp.png")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, dest)
    entry["converted"] = {"settings": settings, "sha1": file_sha1(dest)}
    return True


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    atomic_write_text(path, text)
    return True


def _rejected_text(rejected: list[tuple[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "reason"])
    writer.writerows(rejected)
    return buf.getvalue()


def _sample_key(rows: Iterable[dict]) -> list[tuple]:
    return [tuple(r.get(k) or "" for k in _SAMPLE_KEY) for r in rows]


def build(root: Path, sources: Sources, options: ImageOptions) -> PrepareResult:
    """Checks, pairs and writes ``root/manifest.csv``, ``rejected.csv`` and ``contact_sheet.png``.

    Unpaired images stay in the manifest as single-modality rows (single-modality runs use them) and are
    listed in rejected.csv, since fusion cannot use them. An image identical in content to an earlier one is
    dropped with its partner, so the leakage check of the split cannot fail on the published data. Files are
    only rewritten when their content changes. Split columns are left empty for ``manifest.ensure_splits``.

    Raises:
        FERError: no usable image, or a pairing error (``dataset.pairing=strict``, ambiguous names).
    """
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root / CONVERTED, recursive=True)
    rejected = list(sources.rejected)
    warnings = list(sources.warnings)
    cache = _ScanCache(root / SCAN_CACHE)
    files = [p for m in MODALITIES for paths in sources.images.get(m, {}).values() for p in paths]
    scanned = cache.scan(files)

    readable: dict[str, dict[str, list[Path]]] = {m: {} for m in MODALITIES}
    for m in MODALITIES:
        for label, paths in sources.images.get(m, {}).items():
            for p in paths:
                if scanned[p]["error"] is not None:
                    rejected.append((_shown(p, root), f"unreadable image ({scanned[p]['error']})"))
                else:
                    readable[m].setdefault(label, []).append(p)
    if not any(readable[m] for m in MODALITIES):
        cache.save()
        raise FERError(f"{sources.description or sources.base}: no readable image; see {root / REJECTED}")

    # An image without a partner is no reject: it stays a single-modality row, which the summary counts.
    pairing: PairingResult = pair_files(
        readable["visible"], readable["infrared"], mode=options.pairing, require_pairs=False
    )
    warnings += pairing.warnings

    rows: list[dict] = []
    first_of: dict[str, tuple[str, str]] = {}  # content sha1 -> (file, label) of the first image with it
    conflicts: list[str] = []  # the same image under two labels
    for label, vis, ir in pairing.pairs:
        pair = [(m, p) for m, p in (("visible", vis), ("infrared", ir)) if p is not None]
        dup = next((first_of[scanned[p]["sha1"]] for _, p in pair if scanned[p]["sha1"] in first_of), None)
        if dup is not None:
            for _, p in pair:
                first = first_of.get(scanned[p]["sha1"])
                reason = (
                    f"duplicate content (same as {first[0]}, class {first[1]})"
                    if first
                    else "partner of a duplicate image (fusion needs both)"
                )
                rejected.append((_shown(p, root), reason))
            if dup[1] != label:
                conflicts.append(f"{_shown(pair[0][1], root)} ({label}) = {dup[0]} ({dup[1]})")
            continue
        for _, p in pair:
            first_of[scanned[p]["sha1"]] = (_shown(p, root), label)
        row = {
            "sample_id": _relative(pair[0][1], sources.base),
            "label": label,
            "subject": "",
            "split": "",
            "fold": "",
        }
        for m in MODALITIES:
            row[m], row[f"{m}_sha1"] = "", ""
        for m, p in pair:
            entry = scanned[p]
            target, digest = p, entry["sha1"]
            if entry["mode"] in _HIGH_BIT_MODES:
                target = root / CONVERTED / (_relative(p, sources.base) + ".png")
                cache.dirty |= _convert(p, target, entry, options)
                digest = entry["converted"]["sha1"]
            row[m], row[f"{m}_sha1"] = _relative(target, root), digest
        rows.append(row)
    cache.save()
    labels = sorted({r["label"] for r in rows})
    if len(labels) < 2:
        raise FERError(
            f"{sources.description or sources.base}: only class {labels[0]!r} has usable images, and a classifier "
            "needs at least 2 classes; add a folder of images per class"
        )
    if conflicts:
        warnings.append(
            f"{len(conflicts)} image(s) have the same content as an image of another class, e.g. {conflicts[0]}; "
            "the later copies are dropped (see rejected.csv)"
        )

    manifest = root / "manifest.csv"
    try:
        old = read_manifest(manifest, allow_unsplit=True) if manifest.is_file() else None
    except FERError:
        old = None
    changed = old is None or _sample_key(old) != _sample_key(rows)
    if changed:
        if old is not None:
            added = len(set(_sample_key(rows)) - set(_sample_key(old)))
            removed = len(set(_sample_key(old)) - set(_sample_key(rows)))
            log.warning(
                "%s: the samples changed (%d added, %d removed or changed): the splits are drawn again, "
                "so runs trained before this one may have used a different test set",
                manifest,
                added,
                removed,
            )
        write_manifest(manifest, rows)
    rejected.sort(key=lambda r: natural_key(r[0]))
    _write_if_changed(root / REJECTED, _rejected_text(rejected))
    state = {"source": sources.description, "options": options.to_json(), "warnings": warnings}
    _write_if_changed(root / STATE, json.dumps(state, indent=2) + "\n")
    if changed or not (root / CONTACT_SHEET).is_file():
        from fer_lightning.plots import contact_sheet

        contact_sheet(root, rows, root / CONTACT_SHEET)
    for w in warnings:
        log.warning(w)
    return PrepareResult(root, len(rows), changed, warnings)


def prepare_published(
    name: str,
    raw_dir: Path,
    root: Path,
    options: ImageOptions,
    *,
    download: bool,
    verify: bool,
    base_url: str | None = None,
    retries: int = 3,
) -> PrepareResult:
    """Archives in ``raw_dir`` (fetched when missing and ``download``) -> the prepared dataset in ``root``."""
    archives = ensure_archives(name, raw_dir, download=download, verify=verify, base_url=base_url, retries=retries)
    extracted = extract_all(archives, root / EXTRACTED)
    return build(root, published_sources(name, extracted, root / EXTRACTED), options)


def prepare_folder(source: Path, root: Path, options: ImageOptions) -> PrepareResult:
    return build(root, folder_sources(source), options)


# --------------------------------------------------------------------------------------------------
# Reading a prepared dataset back: the fusion check and the summary


def unpaired_message(manifest: Path, rows: list[dict]) -> str:
    """One line for fusion runs on a manifest with single-modality rows, listing them per class."""
    by_class: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"visible": [], "infrared": []})
    for r in rows:
        for m in MODALITIES:
            if r[m] and not all(r[x] for x in MODALITIES):
                by_class[r["label"]][m].append(Path(r[m]).name)
    parts = []
    for label, sides in sorted(by_class.items()):
        listed = []
        for m, other in (("visible", "infrared"), ("infrared", "visible")):
            names = sides[m]
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                listed.append(f"{len(names)} {m} without {other} ({shown})")
        parts.append(f"class {label!r}: " + ", ".join(listed))
    return (
        f"{manifest}: modality=fusion needs every image paired, but some have no partner: "
        f"{'; '.join(parts)}; "
        "add the missing files and prepare again, or train with modality=visible or modality=infrared"
    )


def _reason_kind(reason: str) -> str:
    return reason.partition(" (")[0]


def summary(root: Path, classes: list[str] | None = None) -> dict:
    """Counts from the files of a prepared dataset: ``{"counts": {(class, modality, split): n}, ...}``."""
    rows = read_manifest(root / "manifest.csv")
    counts: Counter[tuple[str, str, str]] = Counter()
    single: Counter[str] = Counter()  # images without a partner: used by that modality's runs, not by fusion
    for r in rows:
        for m in MODALITIES:
            if r[m]:
                counts[r["label"], m, r["split"]] += 1
        if all(r[m] for m in MODALITIES):
            counts[r["label"], "pairs", r["split"]] += 1
        else:
            single[next(m for m in MODALITIES if r[m])] += 1
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
    }


def print_summary(root: Path, name: str, classes: list[str] | None = None, console=None) -> dict:
    """Prints a table of counts per class x modality x split, then the rejected files by reason."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    info = summary(root, classes)
    counts = info["counts"]
    modalities = [m for m in (*MODALITIES, "pairs") if any(k[1] == m for k in counts)]
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
        other = next(x for x in MODALITIES if x != m)
        console.print(
            f"single-modality: {n} {m} image(s) with no {other} partner, used by modality={m} runs "
            "(fusion needs pairs)",
            soft_wrap=True,
            markup=False,
        )
    if info["warnings"]:  # each was logged when the dataset was checked
        console.print(f"warnings: {len(info['warnings'])} (logged above, kept in {root / STATE})", soft_wrap=True)
    return info
