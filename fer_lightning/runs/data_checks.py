"""A checkpoint's data against today's: the one manifest-change check (a resumed fit warns, an evaluation refuses
unless allowed), the classes, and a split drawn other than the prepared one."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from fer_lightning.data.datamodule import ManifestDataModule
from fer_lightning.errors import FERError
from fer_lightning.runs.results import previous_results
from fer_lightning.runs.run_checkpoint import RunCheckpoint

log = logging.getLogger(__name__)


def manifest_change(dm: ManifestDataModule, saved: str | None, checkpoint: Path, run_dir: Path) -> str | None:
    """None when ``dm``'s manifest is the one ``checkpoint`` was trained on (or it recorded none); else what
    changed, with the samples moved into or out of the test split since ``run_dir``'s results.json."""
    if not saved or saved == dm.manifest_sha1:
        return None
    moved = ""
    previous = previous_results(run_dir).get("test_samples")
    if previous is not None:
        now = {r["sample_id"] for r in dm.rows if r["split"] == "test"}
        before = set(previous)
        into, out = sorted(now - before), sorted(before - now)
        moved = f"; {len(into)} sample(s) moved into the test split, {len(out)} out of it"
        if into or out:
            moved += f" (e.g. {(into or out)[0]})"
    return (
        f"{dm.manifest_path} changed since {checkpoint.name} was written (sha1 {saved[:12]} -> "
        f"{dm.manifest_sha1[:12]}){moved}"
    )


def check_evaluated_manifest(dm: ManifestDataModule, run: RunCheckpoint, allow: bool) -> bool:
    """Whether the manifest changed since ``run``'s checkpoint; refused unless ``allow``, then a warning."""
    saved = (run.datamodule_state or {}).get("manifest_sha1")
    message = manifest_change(dm, saved, run.path, run.run_dir)
    if message is None:
        return False
    if not allow:
        raise FERError(
            f"{message}: the test split may hold training samples; re-prepare the run's data, or pass "
            "allow_manifest_change=true to evaluate anyway (recorded in results.json)"
        )
    print(f"warning: {message}; evaluating anyway (allow_manifest_change=true)", file=sys.stderr, flush=True)
    return True


def warn_resumed_manifest(dm: ManifestDataModule, checkpoint: dict, path: Path) -> None:
    """A fit resumed from ``checkpoint`` (Lightning stores the datamodule's state under its class name) goes on
    with a warning when the manifest changed since."""
    saved = (checkpoint.get(type(dm).__qualname__) or {}).get("manifest_sha1")
    message = manifest_change(dm, saved, path, path.parent.parent)
    if message is not None:
        log.warning("%s: splits or samples may differ from the checkpoint's run", message)


def check_classes(dm: ManifestDataModule, run: RunCheckpoint) -> None:
    """FERError when the classes ``dm`` found differ (in names or order) from those the checkpoint was trained on;
    a checkpoint that recorded none passes."""
    if run.classes and dm.classes != run.classes:
        raise FERError(
            f"{dm.manifest_path}: classes {dm.classes} differ from the checkpoint's "
            f"{run.classes}; evaluate on the dataset the model was trained for"
        )


def warn_split_difference(dm: ManifestDataModule) -> None:
    """A warning where a checkpoint's split is not the prepared one (drawn in memory), naming the keys that differ."""
    if dm.split_source == "prepared":
        return
    ours, prepared = dm.split_spec.to_json(), dm.prepared_split or {}
    keys = [k for k in ours if prepared.get(k) != ours[k]] if prepared else []
    theirs = ", ".join(f"dataset.split.{k}={prepared.get(k)}" for k in keys) or (
        "rows without a split" if prepared else "no split settings"
    )
    mine = ", ".join(f"dataset.split.{k}={ours[k]}" for k in keys) or "its own"
    where = dm.root / "split.json"
    print(
        f"warning: {where}: the prepared split ({theirs}) is not this checkpoint's ({mine}); testing on "
        "the checkpoint's, drawn in memory (split_source=recomputed); the prepared files are left unchanged",
        file=sys.stderr,
        flush=True,
    )
