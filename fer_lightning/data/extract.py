"""Safe extraction of zip and 7z archives: every entry is checked before anything is written, OS junk and
non-images are skipped and reported, and the destination is either absent or one complete extraction."""

from __future__ import annotations

import json
import lzma
import re
import shutil
import stat
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import py7zr
import py7zr.exceptions
from py7zr.io import Py7zIO, WriterFactory

from fer_lightning.data.images import IMAGE_EXTENSIONS
from fer_lightning.errors import FERError, one_line
from fer_lightning.io import atomic_write_text, commit, git_blob_sha1

EXTRACTED_MARKER_NAME = ".extracted.json"
_MARKER_VERSION = 1
_CHUNK = 1 << 20
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


@dataclass(frozen=True)
class _Entry:
    name: str
    is_dir: bool
    kind: str | None  # "symlink", "special file" or None for a plain file/folder
    size: int


def _unsafe_reason(entry: _Entry) -> str | None:
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


def _relative_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


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
    archive: Path, dest: Path, entries: Sequence[_Entry], caps: SizeCaps
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
        parts = _relative_parts(entry.name)
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


class _Meter:
    """Counts the bytes actually written, so an archive whose headers understate its sizes is still capped."""

    def __init__(self, archive: Path, caps: SizeCaps):
        self.archive, self.caps = archive, caps
        self.total = 0
        self.lock = threading.Lock()  # py7zr may decompress folders in threads

    def add(self, entry: str, entry_bytes: int, n: int) -> None:
        with self.lock:
            self.total += n
            self.caps.check(self.archive, entry, entry_bytes, self.total)


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    return None


def _list_zip(archive: Path) -> list[_Entry]:
    with zipfile.ZipFile(archive) as zf:
        return [_Entry(i.filename, i.is_dir(), _zip_kind(i), i.file_size) for i in zf.infolist()]


def _extract_zip(archive: Path, tmp: Path, targets: dict[int, Path], meter: _Meter) -> None:
    with zipfile.ZipFile(archive) as zf:
        # By position, not name: a later entry of the same name must not overwrite the kept one.
        for index, info in enumerate(zf.infolist()):
            relative = targets.get(index)
            if relative is None:
                continue
            out = tmp / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as dst:
                written = 0
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    meter.add(info.filename, written, len(chunk))
                    dst.write(chunk)


def _7z_kind(f: Any) -> str | None:
    if f.is_symlink or f.is_junction:
        return "symlink"
    if f.is_socket:
        return "special file"
    return None


class _FileWriter(Py7zIO):
    """Streams one 7z member straight to its planned file."""

    def __init__(self, path: Path, name: str, meter: _Meter):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("wb")
        self._name, self._meter = name, meter

    def write(self, s: bytes | bytearray) -> int:
        self._meter.add(self._name, self._fh.tell() + len(s), len(s))
        return self._fh.write(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.tell()

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self._fh.flush()

    def size(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()


class _Discard(Py7zIO):
    def write(self, s: bytes | bytearray) -> int:
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return 0


class _PlannedWriters(WriterFactory):
    """Sends each planned member to ``tmp/<relative path>`` so py7zr itself never picks a path."""

    def __init__(self, tmp: Path, relatives: Iterable[Path], meter: _Meter):
        self.tmp = tmp
        self.planned = {r.parts: r for r in relatives}
        self.writers: list[_FileWriter] = []
        self.meter = meter

    def create(self, filename: str) -> Py7zIO:
        # py7zr passes its own cleaned-up member name; cleaned the same way, it names our plan entry. It renames
        # a later entry of a name already seen (``x.png_0``), so the first one always gets the planned file.
        relative = self.planned.pop(_relative_parts(filename), None)
        if relative is None:
            return _Discard()
        writer = _FileWriter(self.tmp / relative, relative.as_posix(), self.meter)
        self.writers.append(writer)
        return writer

    def close_all(self) -> None:
        for writer in self.writers:
            writer.close()


def _list_7z(archive: Path) -> list[_Entry]:
    with py7zr.SevenZipFile(archive, mode="r") as sz:
        if sz.needs_password():
            raise FERError(f"{archive}: archive is encrypted; extract its images by hand")
        return [_Entry(f.filename, f.is_directory, _7z_kind(f), f.uncompressed or 0) for f in sz.files]


def _extract_7z(archive: Path, tmp: Path, targets: dict[int, Path], meter: _Meter) -> None:
    factory = _PlannedWriters(tmp, targets.values(), meter)
    try:
        with py7zr.SevenZipFile(archive, mode="r") as sz:
            names = [f.filename for f in sz.files]
            sz.extract(targets=[names[i] for i in targets], factory=factory)
    finally:
        factory.close_all()


_ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    py7zr.exceptions.ArchiveError,
    lzma.LZMAError,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,  # zipfile: encrypted member
    NotImplementedError,  # zipfile: unsupported compression method (e.g. deflate64)
    ValueError,
)


def _archive_format(archive: Path) -> str:
    suffix = archive.suffix.lower()
    if suffix in (".zip", ".7z"):
        return suffix[1:]
    if zipfile.is_zipfile(archive):
        return "zip"
    if py7zr.is_7zfile(archive):
        return "7z"
    raise FERError(f"{archive}: neither a zip nor a 7z archive; replace it with the published file")


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
    fmt = _archive_format(archive)
    marker = _read_marker(dest)
    if marker is not None and _marker_is_current(marker, archive, dest, blob_id):
        images = [Path(p) for p in marker["images"]]
        return ExtractResult(archive, dest, images, [tuple(s) for s in marker["skipped"]])
    if marker is None and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FERError(f"{dest}: exists but holds no complete extraction of {archive.name}; delete it and rerun")
    try:
        entries = _list_zip(archive) if fmt == "zip" else _list_7z(archive)
        targets, skipped = _plan(archive, dest, entries, caps)
    except _ARCHIVE_ERRORS as exc:
        raise _cannot_extract(archive, exc) from exc
    blob = blob_id if blob_id is not None else git_blob_sha1(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_extractions(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        try:
            (_extract_zip if fmt == "zip" else _extract_7z)(archive, tmp, targets, _Meter(archive, caps))
        except _ARCHIVE_ERRORS as exc:
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
