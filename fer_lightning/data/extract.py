"""Safe extraction of zip and 7z archives: every entry is checked before anything is written, OS junk and
non-images are skipped and reported, and the destination is either absent or one complete extraction."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fer_lightning.data.archive_formats import (
    ARCHIVE_ERRORS,
    ArchiveEntry,
    archive_format,
    extract_7z,
    extract_zip,
    list_7z,
    list_zip,
    relative_parts,
)
from fer_lightning.data.images import IMAGE_EXTENSIONS
from fer_lightning.errors import FERError, one_line
from fer_lightning.io import atomic_write_text, commit, git_blob_sha1

EXTRACTED_MARKER_NAME = ".extracted.json"
_MARKER_VERSION = 1
_JUNK_FOLDERS = frozenset({"__macosx"})
_JUNK_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_MB = 1 << 20
MAX_ENTRY_KEY = "dataset.extract.max_entry_mb"
MAX_ARCHIVE_KEY = "dataset.extract.max_archive_mb"


@dataclass(frozen=True)
class SizeCaps:
    """The most one entry and one archive may expand to, in MiB (why these defaults: docs/datasets.md#viri-and-nvie)."""

    max_entry_mb: float = 64
    max_archive_mb: float = 2048

    def check(self, archive: Path, entry: str, entry_bytes: int, archive_bytes: int) -> None:
        """Refuses ``archive`` when ``entry`` (``entry_bytes`` so far) or all of it (``archive_bytes``) is over."""
        for what, size, cap, key in (
            (f"entry {entry!r} expands", entry_bytes, self.max_entry_mb, MAX_ENTRY_KEY),
            (f"its images up to {entry!r} expand", archive_bytes, self.max_archive_mb, MAX_ARCHIVE_KEY),
        ):
            if size > cap * _MB:
                raise FERError(
                    f"{archive}: {what} to {size / _MB:.1f} MB, over {key}={cap:g}; refusing to extract this "
                    f"archive (nothing of it is kept): delete it and download it again, or raise {key} if its "
                    "images really are that large"
                )


DEFAULT_CAPS = SizeCaps()


@dataclass
class ExtractResult:
    """``images`` are paths relative to ``dest``; ``skipped`` holds ``(entry, reason)`` pairs."""

    archive: Path
    dest: Path
    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def image_paths(self) -> list[Path]:
        return [self.dest / p for p in self.images]


def _unsafe_reason(entry: ArchiveEntry) -> str | None:
    name = entry.name.replace("\\", "/")
    if entry.kind is not None:
        return f"is a {entry.kind}"
    if "\0" in name:
        return "has a NUL byte in its name"
    if name.startswith("/"):
        return "has an absolute path"
    if _DRIVE.match(name):
        return "has a drive letter"
    if ".." in name.split("/"):
        return "has a '..' component"
    return None


def skip_reason(parts: tuple[str, ...]) -> str | None:
    """Why the file at path ``parts`` is no candidate image (OS junk, not an image), or None; folder datasets
    apply the same rules."""
    if any(p.lower() in _JUNK_FOLDERS for p in parts[:-1]):
        return "macOS metadata folder"
    base = parts[-1]
    if base.startswith("._"):
        return "macOS resource fork"
    if base.lower() in _JUNK_FILES:
        return "OS metadata file"
    suffix = PurePosixPath(base).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return f"not an image ({suffix or 'no extension'})"
    return None


def _plan(
    archive: Path, dest: Path, entries: Sequence[ArchiveEntry], caps: SizeCaps
) -> tuple[dict[int, Path], list[tuple[str, str]]]:
    """Validate every entry before anything is written; map the indices of entries to extract to relative paths.

    Of entries whose paths differ at most in case, the first is kept and later ones are reported: the rest of the
    pipeline matches names without case, and a case-insensitive file system would let the last one win.
    """
    for entry in entries:
        reason = _unsafe_reason(entry)
        if reason is not None:
            raise FERError(
                f"{archive}: entry {entry.name!r} {reason}; refusing to extract this archive "
                "(delete it and download it again)"
            )
    root = dest.resolve()
    targets: dict[int, Path] = {}
    kept: dict[tuple[str, ...], str] = {}  # case-folded path -> the entry kept for it
    skipped: list[tuple[str, str]] = []
    total = 0
    for index, entry in enumerate(entries):
        parts = relative_parts(entry.name)
        if entry.is_dir or not parts:
            continue
        folded = tuple(p.casefold() for p in parts)
        reason = skip_reason(parts)
        if reason is None and entry.size == 0:
            reason = "empty file"
        if reason is None and folded in kept:
            reason = f"same name (case aside) as the earlier entry {kept[folded]!r}, which is kept"
        if reason is not None:
            skipped.append((entry.name, reason))
            continue
        relative = Path(*parts)
        if not (root / relative).resolve().is_relative_to(root):
            raise FERError(f"{archive}: entry {entry.name!r} resolves outside {dest}; refusing to extract")
        total += entry.size
        caps.check(archive, entry.name, entry.size, total)
        kept[folded] = entry.name
        targets[index] = relative
    return targets, skipped


class WriteMeter:
    """Counts the bytes actually written, so an archive whose headers understate its sizes is still capped."""

    def __init__(self, archive: Path, caps: SizeCaps):
        self.archive, self.caps = archive, caps
        self.total = 0
        self.lock = threading.Lock()  # py7zr may decompress folders in threads

    def add(self, entry: str, entry_bytes: int, n: int) -> None:
        with self.lock:
            self.total += n
            self.caps.check(self.archive, entry, entry_bytes, self.total)


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((dest / EXTRACTED_MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("version") == _MARKER_VERSION else None


def _marker_is_current(marker: dict[str, Any], archive: Path, dest: Path, blob_id: str | None) -> bool:
    st = archive.stat()
    if marker.get("archive") != archive.name or marker.get("size") != st.st_size:
        return False
    if blob_id is not None:
        same = marker.get("blob") == blob_id
    else:
        same = marker.get("mtime_ns") == st.st_mtime_ns or marker.get("blob") == git_blob_sha1(archive)
    return same and all((dest / p).is_file() for p in marker.get("images", []))


def _remove_stale_extractions(dest: Path) -> None:
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def safe_extract(
    archive: str | Path, dest: str | Path, *, blob_id: str | None = None, caps: SizeCaps = DEFAULT_CAPS
) -> ExtractResult:
    """Extract the images of a zip or 7z ``archive`` into ``dest``, refusing unsafe entries.

    Every entry name is validated before anything is written: an absolute path, a drive letter, a
    ``..`` component, a symlink, a special file, or an image expanding past ``caps`` makes the whole archive fail
    (the caps are checked again on the bytes written). Of entries whose names differ at most in case, the first is
    extracted and the later ones are reported. Images are streamed
    into a temporary sibling folder that is renamed to ``dest`` once complete, so ``dest`` is either
    absent or a whole extraction; a marker (``.extracted.json``, recording the archive's name, size,
    mtime and blob id) makes a second call return at once. OS junk and non-images are skipped and
    reported. ``blob_id`` (when the caller already knows it) saves hashing the archive.

    Raises:
        FERError: unsafe or oversized entry, unreadable archive, or ``dest`` exists but is not an extraction.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FERError(f"{archive}: archive not found; download it first")
    fmt = archive_format(archive)
    marker = _read_marker(dest)
    if marker is not None and _marker_is_current(marker, archive, dest, blob_id):
        images = [Path(p) for p in marker["images"]]
        return ExtractResult(archive, dest, images, [tuple(s) for s in marker["skipped"]])
    if marker is None and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FERError(f"{dest}: exists but holds no complete extraction of {archive.name}; delete it and rerun")
    try:
        entries = list_zip(archive) if fmt == "zip" else list_7z(archive)
        targets, skipped = _plan(archive, dest, entries, caps)
    except ARCHIVE_ERRORS as exc:
        raise _cannot_extract(archive, exc) from exc
    blob = blob_id if blob_id is not None else git_blob_sha1(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_extractions(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        try:
            (extract_zip if fmt == "zip" else extract_7z)(archive, tmp, targets, WriteMeter(archive, caps))
        except ARCHIVE_ERRORS as exc:
            raise _cannot_extract(archive, exc) from exc
        images = sorted(targets.values(), key=lambda p: p.as_posix())
        _write_marker(tmp, archive, blob, images, skipped)
        if dest.exists():  # an outdated extraction (its marker names other bytes) or an empty folder
            shutil.rmtree(dest)
        commit(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExtractResult(archive, dest, images, skipped)


def _cannot_extract(archive: Path, exc: BaseException) -> FERError:
    return FERError(
        f"{archive}: cannot extract ({one_line(exc) or type(exc).__name__}); delete it to download it again"
    )


def _write_marker(tmp: Path, archive: Path, blob: str, images: list[Path], skipped: list[tuple[str, str]]):
    st = archive.stat()
    marker = {
        "version": _MARKER_VERSION,
        "archive": archive.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "blob": blob,
        "images": [p.as_posix() for p in images],
        "skipped": [list(s) for s in skipped],
    }
    atomic_write_text(tmp / EXTRACTED_MARKER_NAME, json.dumps(marker, indent=1, sort_keys=True))
