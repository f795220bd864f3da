"""Pair visible and infrared images of the same face by file name, or by sorted order as the study did."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Literal

from fer_lightning.data.images import IMAGE_EXTENSIONS
from fer_lightning.errors import FERError
from fer_lightning.validation import Choice

# Config key named in messages, so the user knows what to change.
PAIRING_KEY = "dataset.pairing"
# auto: pair by name, else in sorted order where a class's counts match (with a warning); strict: by name only
PAIRING = Choice(("auto", "strict"), fix="use auto or strict")

MODALITY_TOKENS: frozenset[str] = frozenset({"vis", "visible", "rgb", "ir", "infrared", "thermal", "therm", "lwir"})
_SEPARATORS = re.compile(r"[_\-.\s]+")
_DIGITS = re.compile(r"(\d+)", re.ASCII)
_MAX_LISTED = 5

PairRow = tuple[str, Path | None, Path | None]


@dataclass
class PairingResult:
    """Outcome of :func:`pair_files`.

    ``pairs`` rows are ``(label, visible, infrared)``; one side is ``None`` for an image kept
    without a partner (only when pairs are not required).
    """

    pairs: list[PairRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def natural_key(s: str | PurePath) -> tuple:
    """Sort key where digit runs compare as numbers, case-insensitively: ``img2`` < ``img10``."""
    text = s.as_posix() if isinstance(s, PurePath) else str(s)
    parts = _DIGITS.split(text)
    # split() alternates text and digit runs starting with text, so ints and strs never meet.
    key = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))
    return key, text


def _strip_tokens(text: str) -> str:
    tokens = [t for t in _SEPARATORS.split(text.lower()) if t]
    return "_".join(t for t in tokens if t not in MODALITY_TOKENS)


def normalise_stem(name: str | PurePath) -> str:
    """Lower-cased file stem without modality tokens, separators collapsed to ``_``.

    A token is dropped only when it stands alone between ``_ - .`` or spaces (or at either end), so
    ``IMG_001_vis.JPG`` and ``img_001_IR.jpg`` both give ``img_001`` while ``visit3.jpg`` keeps ``visit3``.
    Only an image extension is removed; any other suffix is treated as part of the name.
    """
    base = PurePath(name).name
    suffix = PurePath(base).suffix
    if suffix.lower() in IMAGE_EXTENSIONS:
        base = base[: -len(suffix)]
    return _strip_tokens(base)


def _path_key(path: Path, depth: int) -> tuple[str, ...]:
    """The normalised stem plus the ``depth - 1`` nearest parent folder names."""
    parents = [_strip_tokens(p) for p in path.parts[-depth:-1]] if depth > 1 else []
    return (*parents, normalise_stem(path.name))


def _keyed(paths: Sequence[Path], depth: int) -> tuple[dict[tuple[str, ...], Path], tuple[Path, Path] | None]:
    keyed: dict[tuple[str, ...], Path] = {}
    for path in paths:
        key = _path_key(path, depth)
        if key in keyed:
            return keyed, (keyed[key], path)
        keyed[key] = path
    return keyed, None


def _key_by_name(
    label: str, visible: Sequence[Path], infrared: Sequence[Path]
) -> tuple[dict[tuple[str, ...], Path], dict[tuple[str, ...], Path]]:
    """Key both modalities by normalised stem, adding parent folders only where stems repeat.

    Archives that keep each subject in its own folder (``S01/1.jpg``, ``S02/1.jpg``) repeat stems;
    the shallowest depth at which every key is unique in both modalities is used, so that the
    same folder structure on both sides still pairs.
    """
    max_depth = max(len(p.parts) for p in (*visible, *infrared))
    clash: tuple[Path, Path] | None = None
    for depth in range(1, max_depth + 1):
        vis_keys, vis_clash = _keyed(visible, depth)
        ir_keys, ir_clash = _keyed(infrared, depth)
        clash = vis_clash or ir_clash
        if clash is None:
            return vis_keys, ir_keys
    assert clash is not None
    a, b = clash
    raise FERError(
        f"class {label!r}: {a} and {b} have the same normalised name {normalise_stem(a.name)!r}, "
        "so visible/infrared pairing is ambiguous; remove or rename one of them"
    )


def _show(path: Path) -> str:
    return PurePath(*path.parts[-2:]).as_posix()


def _listing(paths: Iterable[Path]) -> str:
    return _listed([_show(p) for p in paths])


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f" and {len(names) - _MAX_LISTED} more"
    return shown


def _sorted(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=natural_key)


@dataclass
class _ClassPairing:
    pairs: list[tuple[Path, Path]]
    visible_only: list[Path]
    infrared_only: list[Path]


def _pair_by_name(label: str, visible: list[Path], infrared: list[Path]) -> _ClassPairing:
    if not visible or not infrared:
        return _ClassPairing([], visible, infrared)
    vis_keys, ir_keys = _key_by_name(label, visible, infrared)
    pairs = [(vis_keys[k], ir_keys[k]) for k in vis_keys if k in ir_keys]
    vis_only = [p for k, p in vis_keys.items() if k not in ir_keys]
    ir_only = [p for k, p in ir_keys.items() if k not in vis_keys]
    return _ClassPairing(pairs, vis_only, ir_only)


def _pair_class(
    label: str, visible: list[Path], infrared: list[Path], mode: str, result: PairingResult
) -> _ClassPairing:
    by_name = _pair_by_name(label, visible, infrared)
    unmatched = by_name.visible_only or by_name.infrared_only
    if unmatched and visible and infrared and len(visible) == len(infrared):
        if mode == "strict":
            raise FERError(
                f"class {label!r}: {len(by_name.visible_only)} visible and {len(by_name.infrared_only)} "
                f"infrared file names do not match (visible: {_listing(by_name.visible_only)}; "
                f"infrared: {_listing(by_name.infrared_only)}); rename them so the names match, "
                f"or set {PAIRING_KEY}=auto to pair by sorted order"
            )
        if by_name.pairs:
            # Some names match: pairing everything by order would shift every pair after the first gap, so the
            # leftovers stay unpaired (and are reported as such).
            return by_name
        result.warnings.append(
            f"class {label!r}: visible and infrared file names do not match "
            f"({len(visible)} images each); paired by sorted order, as the study did; check contact_sheet.png"
        )
        return _ClassPairing(list(zip(visible, infrared, strict=True)), [], [])
    return by_name


def pair_files(
    visible: Mapping[str, Sequence[Path]],
    infrared: Mapping[str, Sequence[Path]],
    *,
    mode: Literal["auto", "strict"] = "auto",
    require_pairs: bool = True,
) -> PairingResult:
    """Pair visible and infrared images class by class.

    Images pair when their :func:`normalise_stem` names match (parent folders are added to the
    key only when stems repeat within a class). When names do not all match but a class has as
    many visible as infrared images, ``mode="auto"`` pairs them in natural sort order of their
    paths (with a warning), and ``mode="strict"`` raises. When counts differ, ``require_pairs``
    (fusion) raises one error listing every unpaired image; otherwise unpaired images are kept
    as single-modality rows.

    Raises:
        FERError: ambiguous names, strict-mode mismatch, or unpaired images when pairs are required.
    """
    PAIRING.check(PAIRING_KEY, mode)
    result = PairingResult()
    problems: list[str] = []
    for label in sorted(set(visible) | set(infrared), key=natural_key):
        vis = _sorted(visible.get(label, ()))
        ir = _sorted(infrared.get(label, ()))
        paired = _pair_class(label, vis, ir, mode, result)
        vis_only, ir_only = _sorted(paired.visible_only), _sorted(paired.infrared_only)
        rows: list[PairRow] = [(label, v, i) for v, i in paired.pairs]
        rows += [(label, v, None) for v in vis_only] + [(label, None, i) for i in ir_only]
        result.pairs += sorted(rows, key=lambda r: natural_key(r[1] or r[2]))
        if vis_only or ir_only:
            problems.append(describe_unpaired(label, [_show(p) for p in vis_only], [_show(p) for p in ir_only]))
    if problems and require_pairs:
        raise FERError(
            "visible+infrared fusion needs every image paired, but some have no partner: "
            + "; ".join(problems)
            + "; add the missing files, or train on a single modality"
        )
    if problems and any(visible.values()) and any(infrared.values()):
        result.warnings.append("images kept without a partner: " + "; ".join(problems))
    return result


def describe_unpaired(label: str, visible: Sequence[str], infrared: Sequence[str]) -> str:
    """``class 'Sad': 2 visible without infrared (a.jpg, b.jpg)``: the images of class ``label`` that have no
    partner, by the names given (preparing's pairing and a fusion run's check on the manifest say it alike)."""
    parts = []
    if visible:
        parts.append(f"{len(visible)} visible without infrared ({_listed(visible)})")
    if infrared:
        parts.append(f"{len(infrared)} infrared without visible ({_listed(infrared)})")
    return f"class {label!r}: " + ", ".join(parts)
