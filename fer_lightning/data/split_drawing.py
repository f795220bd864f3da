"""How the train/val/test split is drawn and checked: the settings (:class:`SplitSpec`), the stratified assignment
of whole groups (subjects, near-duplicate clusters) to splits and folds, and the checks that refuse a split no run
can train on or one that leaks images between splits."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fer_lightning.data import near_duplicates
from fer_lightning.data.near_duplicates import COLUMN as NEAR_DUPLICATE_GROUP
from fer_lightning.errors import FERError
from fer_lightning.validation import Number

SPLITS = ("train", "val", "test")
# dataset.split.folds: k-fold cross-validation over train+val, or null for one fixed split
FOLDS = Number(int, 2, null=True, hint=", or null")


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
        FOLDS.check("dataset.split.folds", spec.folds)
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
    rule = Number(int, 0, folds - 1, lenient=True, hint=f" for dataset.split.folds={folds}")
    fold = rule.check("dataset.split.fold", fold)
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
