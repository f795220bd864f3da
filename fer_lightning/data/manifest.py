"""The prepared-dataset manifest: one row per sample, persisted splits, leakage check.

``<data_dir>/<dataset>/manifest.csv`` has the columns of the README's schema section (``sample_id, label,
visible, infrared, subject, split``) plus ``fold`` (k-fold index over train+val, empty when unused),
``near_duplicate_group`` (the sample's near-duplicate cluster, empty when it has none; :mod:`.near_duplicates`)
and the SHA-1 of each image file (used by the leakage check and as cache keys). Image paths are relative to the
manifest.
The split settings that produced the ``split`` column are stored in ``split.json`` beside it, so a run never
silently gets another test set: new settings re-split, and checkpoints record the manifest hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fer_lightning.data import near_duplicates
from fer_lightning.data.near_duplicates import COLUMN as NEAR_DUPLICATE_GROUP
from fer_lightning.errors import FERError
from fer_lightning.io import atomic_write_bytes, atomic_write_text, file_sha1

COLUMNS = (
    "sample_id",
    "label",
    "visible",
    "infrared",
    "subject",
    "split",
    "fold",
    NEAR_DUPLICATE_GROUP,
    "visible_sha1",
    "infrared_sha1",
)
REQUIRED = COLUMNS[:6]
# Where prepare found the face with the face settings it last prepared (fer_lightning/data/face_crops.py); written
# after COLUMNS, only while faces are on. Not part of the split's identity (manifest_sha1 leaves them out).
FACE_COLUMNS = ("face", "visible_box", "infrared_box")
SPLITS = ("train", "val", "test")
# The files of a prepared dataset (docs/schemas.md#a-prepared-dataset), beside split.json.
MANIFEST = "manifest.csv"
REJECTED = "rejected.csv"
CONTACT_SHEET = "contact_sheet.png"


@dataclass(frozen=True)
class SplitSpec:
    """How the train/val/test split is drawn. ``seed`` is the split's own seed, not the training seed, so that
    a sweep over training seeds keeps one test set."""

    seed: int = 0
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    group_regex: str | None = None
    holdout_regex: str | None = None
    folds: int | None = None
    # group | warn | off. conf/dataset/_base.yaml sets group; a config without the key was written before
    # near-duplicates were checked: its run is evaluated on the split it was trained on, with a warning where that
    # split cuts near-duplicate clusters.
    near_duplicates: str = "warn"

    @classmethod
    def from_config(cls, cfg: dict | None) -> SplitSpec:
        cfg = dict(cfg or {})
        cfg.pop("fold", None)  # which fold to use is a run setting, not part of the persisted split
        unknown = set(cfg) - {"seed", "ratios", "group_regex", "holdout_regex", "folds", "near_duplicates"}
        if unknown:
            raise FERError(
                f"unknown dataset.split key(s) {sorted(unknown)}: use seed, ratios, group_regex, "
                "holdout_regex, folds, fold, near_duplicates"
            )
        mode = cfg.get("near_duplicates", cls.near_duplicates)
        if mode is False:  # YAML 1.1 reads an unquoted off as false
            mode = cfg["near_duplicates"] = "off"
        if mode not in near_duplicates.MODES:
            raise FERError(
                f"dataset.split.near_duplicates={mode!r}: use group (near-duplicate clusters stay in one split), "
                "warn (list the clusters a split cuts) or off"
            )
        if "ratios" in cfg:
            cfg["ratios"] = tuple(float(r) for r in cfg["ratios"])
        for key in ("group_regex", "holdout_regex"):
            # Hydra reads an unquoted number (holdout_regex=20240303) as an int; as a pattern it is its digits.
            if cfg.get(key) is not None and not isinstance(cfg[key], str):
                cfg[key] = str(cfg[key])
        spec = cls(**cfg)
        if len(spec.ratios) != 3 or min(spec.ratios) < 0 or abs(sum(spec.ratios) - 1) > 1e-6:
            raise FERError(f"dataset.split.ratios={list(spec.ratios)}: need three non-negative numbers summing to 1")
        if spec.folds is not None and spec.folds < 2:
            raise FERError(f"dataset.split.folds={spec.folds}: need at least 2 folds, or null")
        for key in ("group_regex", "holdout_regex"):
            pattern = getattr(spec, key)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise FERError(
                        f"dataset.split.{key}={pattern!r} is not a valid regex ({exc}); fix the pattern, quoting "
                        f"it on the command line: 'dataset.split.{key}=\"...\"'"
                    ) from exc
        return spec

    def to_json(self) -> dict:
        """The settings that drew the split. warn and off draw it as it was drawn before near-duplicates were
        checked, so they record what such datasets recorded, and their manifests are reused as they are."""
        d = asdict(self)
        d["ratios"] = list(self.ratios)
        if d.pop("near_duplicates") == "group":
            d["near_duplicates"] = "group"
            d["near_duplicate_threshold"] = near_duplicates.THRESHOLD
        return d


def manifest_bytes(rows: Iterable[dict], columns: Sequence[str] = COLUMNS) -> bytes:
    """The manifest file's exact content, so a split held in memory has the sha1 its file would have."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue().encode("utf-8")


def _columns(rows: list[dict]) -> tuple[str, ...]:
    return COLUMNS + FACE_COLUMNS if any(r.get("face") for r in rows) else COLUMNS


def write_manifest(path: Path, rows: Iterable[dict]) -> None:
    """Writes the rows, with their face columns while they have any."""
    rows = list(rows)
    atomic_write_bytes(path, manifest_bytes(rows, _columns(rows)))


def manifest_sha1(path: Path, rows: list[dict]) -> str:
    """The sha1 of the manifest file ``rows`` were read from, as it would be without face columns: preparing other
    face settings rewrites those, and must not make a checkpoint's manifest look changed."""
    if _columns(rows) == COLUMNS:
        return file_sha1(path)
    return hashlib.sha1(manifest_bytes(rows)).hexdigest()


def rejected_text(rejected: Iterable[tuple[str, str]]) -> str:
    """``rejected.csv``: ``file, reason`` for every file found but not used."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "reason"])
    writer.writerows(rejected)
    return buf.getvalue()


def read_manifest(path: Path, allow_unsplit: bool = False) -> list[dict]:
    if not path.is_file():
        raise FERError(f"{path}: no manifest; prepare the dataset first (python -m fer_lightning.prepare)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise FERError(f"{path}: missing column(s) {missing}; delete it and prepare the dataset again")
        rows = list(reader)
    for i, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS and not (allow_unsplit and row["split"] == ""):
            raise FERError(f"{path}:{i}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        if not row["visible"] and not row["infrared"]:
            raise FERError(f"{path}:{i}: sample {row['sample_id']!r} has neither a visible nor an infrared image")
    return rows


def _sample_name(row: dict) -> str:
    return Path(row.get("visible") or row.get("infrared") or row["sample_id"]).name


def _match_group(row: dict, regex: re.Pattern) -> str | None:
    m = regex.search(_sample_name(row))
    return m.group(1) if m and m.groups() else None


def _group_of(row: dict, regex: re.Pattern | None) -> str:
    if regex is None:
        return row["sample_id"]
    group = _match_group(row, regex)
    if group is None:
        name = _sample_name(row)
        raise FERError(f"dataset.split.group_regex={regex.pattern!r} has no capture group matching {name!r}")
    return group


def _assign_groups(
    groups: dict[str, list[int]],
    labels: Sequence[str],
    names: Sequence[str],
    ratios: Sequence[float],
    rng: np.random.Generator,
) -> dict[str, str]:
    """Stratified assignment of whole groups to splits.

    Groups are visited in a seeded random order; each goes to the split whose per-class counts are furthest
    below target, so classes stay balanced while no group is split.
    """
    classes = sorted(set(labels))
    total = {c: sum(1 for lab in labels if lab == c) for c in classes}
    target = {s: {c: r * total[c] for c in classes} for s, r in zip(names, ratios, strict=True)}
    have = {s: dict.fromkeys(classes, 0) for s in names}
    assignment = {}
    order = sorted(groups)
    rng.shuffle(order)
    for g in order:
        counts: dict[str, int] = defaultdict(int)
        for i in groups[g]:
            counts[labels[i]] += 1

        def deficit(s: str, counts=counts) -> float:
            # Ties (common with a few samples per class) go to the split furthest below its overall target, so
            # small classes do not all send their leftover sample to the same split and leave another empty.
            own = sum(target[s][c] - have[s][c] for c in counts if target[s][c] > 0)
            overall = sum(target[s][c] - have[s][c] for c in classes)
            return own + 1e-6 * overall - 1e-9 * names.index(s)

        best = max((s for s in names if sum(target[s].values()) > 0), key=deficit)
        assignment[g] = best
        for c, k in counts.items():
            have[best][c] += k
    return assignment


def assign_splits(rows: list[dict], spec: SplitSpec) -> list[dict]:
    """Returns copies of ``rows`` with ``split`` (and ``fold`` when ``spec.folds``) filled in, deterministically."""
    rng = np.random.default_rng(spec.seed)
    group_re = re.compile(spec.group_regex) if spec.group_regex else None
    out = [dict(r, split="", fold="") for r in rows]
    labels = [r["label"] for r in out]
    pool = list(range(len(out)))
    group_clusters = spec.near_duplicates == "group"
    if spec.holdout_regex:
        hold = re.compile(spec.holdout_regex)
        test = {i for i in pool if hold.search(_sample_name(out[i]))}
        if not test:
            raise FERError(
                f"dataset.split.holdout_regex={spec.holdout_regex!r} matches no file name; it is searched in each "
                "sample's file names (data/<dataset>/manifest.csv lists them): quote a pattern that matches the "
                "test files, e.g. 'dataset.split.holdout_regex=\"^s0[1-3]_\"'"
            )
        if group_clusters:  # the near-duplicates of a held-out file are held out with it
            held = {out[i].get(NEAR_DUPLICATE_GROUP) for i in test} - {None, ""}
            test |= {i for i in pool if out[i].get(NEAR_DUPLICATE_GROUP) in held}
        for i in test:
            out[i]["split"] = "test"
        pool = [i for i in pool if i not in test]
        names, ratios = ["train", "val"], [spec.ratios[0], spec.ratios[1]]
    else:
        names, ratios = list(SPLITS), list(spec.ratios)
    groups: dict[str, list[int]] = defaultdict(list)
    for i in pool:
        groups[_group_of(out[i], group_re)].append(i)
    if group_clusters:
        groups = _join_clusters(groups, out)
    total = sum(ratios)
    assignment = _assign_groups(groups, labels, names, [r / total for r in ratios], rng)
    for g, members in groups.items():
        for i in members:
            out[i]["split"] = assignment[g]
    if spec.folds:
        _assign_folds(out, groups, assignment, labels, spec.folds, rng)
    if group_re is not None:  # the group is the subject (empty only where unknown)
        for r in out:
            r["subject"] = _match_group(r, group_re) or r.get("subject") or ""
    return out


def _join_clusters(groups: dict[str, list[int]], rows: list[dict]) -> dict[str, list[int]]:
    """The groups with those a near-duplicate cluster spans joined into one, under the smallest of their keys, so
    that a dataset without near-duplicates keeps exactly the groups (and the split) it had."""
    parent = {g: g for g in groups}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first: dict[str, str] = {}  # cluster -> a group holding one of its samples
    for g, members in groups.items():
        for i in members:
            cluster = rows[i].get(NEAR_DUPLICATE_GROUP)
            if cluster:
                a, b = root(first.setdefault(cluster, g)), root(g)
                parent[max(a, b)] = min(a, b)
    joined: dict[str, list[int]] = defaultdict(list)
    for g, members in groups.items():
        joined[root(g)].extend(members)
    return joined


def _assign_folds(
    out: list[dict],
    groups: dict[str, list[int]],
    assignment: dict[str, str],
    labels: Sequence[str],
    folds: int,
    rng: np.random.Generator,
) -> None:
    trainval = {g: members for g, members in groups.items() if assignment[g] != "test"}
    fold_of = _assign_groups(trainval, labels, [str(k) for k in range(folds)], [1 / folds] * folds, rng)
    for g, members in trainval.items():
        for i in members:
            out[i]["fold"] = fold_of[g]


def check_splits(rows: list[dict], spec: SplitSpec) -> None:
    """Refuses a split no run can train on (an empty split, a class missing from train, an empty fold), naming
    the setting to change; called before the split replaces the persisted one, so a refused run changes nothing."""
    n = len(rows)
    counts = Counter(r["split"] for r in rows)
    empty = [s for s in SPLITS if not counts[s]]
    classes = {r["label"] for r in rows}
    missing = sorted(classes - {r["label"] for r in rows if r["split"] == "train"})
    if spec.holdout_regex and (counts["test"] == n or missing):
        what = f"all {n} samples" if counts["test"] == n else f"every sample of class(es) {missing}"
        raise FERError(
            f"dataset.split.holdout_regex={spec.holdout_regex!r} matches {what}, leaving nothing of them to "
            "train on; make it match only the test files' names"
        )
    if empty or missing:
        problem = f"leaves the {'/'.join(empty)} split empty" if empty else f"leaves class(es) {missing} out of train"
        joined = ""
        if spec.near_duplicates == "group" and any(r.get(NEAR_DUPLICATE_GROUP) for r in rows):
            info = near_duplicates.stats(rows)
            joined = (
                f" (dataset.split.near_duplicates=group also keeps {info['clusters']} near-duplicate cluster(s) of "
                f"{info['samples_in_clusters']} samples whole; near_duplicates=warn splits them)"
            )
        if spec.group_regex:
            found = len({_match_group(r, re.compile(spec.group_regex)) for r in rows})
            raise FERError(
                f"dataset.split.group_regex={spec.group_regex!r} finds {found} group(s) in {n} samples, which "
                f"{problem}{joined}; use a pattern that captures the subject, or set it to null"
            )
        if joined:
            raise FERError(
                f"dataset.split.near_duplicates=group keeps {n} samples in {_group_count(rows)} groups of "
                f"near-duplicates, which {problem}; set dataset.split.near_duplicates=warn to split the clusters "
                "and list them, or add samples"
            )
        short = empty or ["train"]
        unshared = [s for s in short if not dict(zip(SPLITS, spec.ratios, strict=True))[s] > 0]
        fix = (
            f"give the {'/'.join(unshared)} split a share (a ratio > 0)"
            if unshared
            else f"too few samples for these ratios: add samples, or raise the {'/'.join(short)} share"
        )
        raise FERError(f"dataset.split.ratios={list(spec.ratios)} {problem} for {n} samples; {fix}")
    if spec.folds:
        used = {r["fold"] for r in rows if r["split"] != "test"}
        if len(used) < spec.folds:
            raise FERError(
                f"dataset.split.folds={spec.folds}: the train+val samples form only {len(used)} non-empty "
                "fold(s); use fewer folds"
            )


def _group_count(rows: list[dict]) -> int:
    return len({r.get(NEAR_DUPLICATE_GROUP) or f"sample {r['sample_id']}" for r in rows})


def apply_fold(rows: list[dict], folds: int | None, fold: int | None) -> list[dict]:
    """Uses fold ``fold`` of the persisted k-fold assignment as validation and the other folds as training."""
    if not folds:
        return rows
    if fold is None or not 0 <= int(fold) < folds:
        raise FERError(f"dataset.split.fold={fold}: must be in 0..{folds - 1} for dataset.split.folds={folds}")
    out = []
    for r in rows:
        if r["split"] != "test":
            r = dict(r, split="val" if r["fold"] == str(fold) else "train")
        out.append(r)
    return out


def check_leakage(rows: list[dict]) -> None:
    """Identical image content in two splits is an error: it would put test images in training."""
    seen: dict[str, tuple[str, str]] = {}
    for r in rows:
        for mod in ("visible", "infrared"):
            digest = r.get(f"{mod}_sha1")
            if not digest:
                continue
            if digest in seen and seen[digest][0] != r["split"]:
                other_split, other_file = seen[digest]
                raise FERError(
                    f"leakage: {r[mod]} ({r['split']}) has the same content as {other_file} ({other_split}); "
                    "remove the duplicate or set dataset.split.group_regex so both land in one split"
                )
            seen.setdefault(digest, (r["split"], r[mod]))


def split_state(manifest_dir: Path) -> dict | None:
    path = manifest_dir / "split.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _draw_splits(manifest_dir: Path, rows: list[dict], spec: SplitSpec) -> list[dict]:
    """``rows`` split by ``spec`` with their near-duplicate clusters, checked (trainable, no leakage); reads image
    files only to hash them."""
    for r in rows:
        for mod in ("visible", "infrared"):
            if r[mod] and not r.get(f"{mod}_sha1"):
                r[f"{mod}_sha1"] = file_sha1(manifest_dir / r[mod])
    rows = assign_splits(near_duplicates.with_clusters(manifest_dir, rows), spec)
    check_splits(rows, spec)
    check_leakage(rows)
    return rows


def _prepared(manifest_dir: Path, spec: SplitSpec) -> tuple[list[dict], dict | None, bool]:
    """The manifest's rows, the settings in split.json, and whether those rows are split as ``spec`` says.

    Under ``group`` a manifest written before near-duplicates were checked is not current: its split may cut
    clusters."""
    rows = read_manifest(manifest_dir / MANIFEST, allow_unsplit=True)
    state = split_state(manifest_dir)
    have_clusters = bool(rows) and NEAR_DUPLICATE_GROUP in rows[0]
    current = state == spec.to_json() and all(r["split"] for r in rows)
    return rows, state, current and (have_clusters or spec.near_duplicates != "group")


def _with_clusters(manifest_dir: Path, rows: list[dict], spec: SplitSpec) -> list[dict]:
    """The rows with their near-duplicate cluster: from the manifest or, for a manifest written before
    near-duplicates were checked (kept as it is while its split is reused), computed now; with ``off``, not at all."""
    if (rows and NEAR_DUPLICATE_GROUP in rows[0]) or spec.near_duplicates == "off":
        return rows
    return near_duplicates.with_clusters(manifest_dir, rows)


def ensure_splits(manifest_dir: Path, spec: SplitSpec, log=print) -> list[dict]:
    """Makes the manifest's splits match ``spec``: reused when they already do, re-drawn (and said) when not."""
    path = manifest_dir / MANIFEST
    rows, state, current = _prepared(manifest_dir, spec)
    if current:
        return _with_clusters(manifest_dir, rows, spec)
    rows = _draw_splits(manifest_dir, rows, spec)
    if state is not None:
        log(f"split settings changed ({state} -> {spec.to_json()}): re-drawing the splits of {path}")
    write_manifest(path, rows)
    atomic_write_text(manifest_dir / "split.json", json.dumps(spec.to_json(), indent=2) + "\n")
    return rows


@dataclass(frozen=True)
class ReadSplit:
    """A split read without writing: the rows, the sha1 their manifest file has (or would have), where they came
    from (``prepared``: the manifest as it is; ``recomputed``: drawn in memory by ``spec``) and the prepared
    split settings (split.json) they differ from."""

    rows: list[dict]
    manifest_sha1: str
    source: str
    prepared: dict | None


def read_splits(manifest_dir: Path, spec: SplitSpec) -> ReadSplit:
    """The manifest split by ``spec`` without changing the prepared files: evaluating a checkpoint of another
    split leaves another user's prepared split as it is."""
    rows, state, current = _prepared(manifest_dir, spec)
    if current:
        rows = _with_clusters(manifest_dir, rows, spec)
        return ReadSplit(rows, manifest_sha1(manifest_dir / MANIFEST, rows), "prepared", state)
    rows = _draw_splits(manifest_dir, rows, spec)
    return ReadSplit(rows, hashlib.sha1(manifest_bytes(rows)).hexdigest(), "recomputed", state)
