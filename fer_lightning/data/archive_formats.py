"""Reading zip and 7z archives for :func:`~fer_lightning.data.extract.safe_extract`: listing their entries, and
streaming the planned ones to their planned files (never to a path the archive chooses)."""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import py7zr
import py7zr.exceptions
from py7zr.io import Py7zIO, WriterFactory

from fer_lightning.errors import FERError

if TYPE_CHECKING:
    from fer_lightning.data.extract import WriteMeter

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    is_dir: bool
    kind: str | None  # "symlink", "special file" or None for a plain file/folder
    size: int


def relative_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    return None


def list_zip(archive: Path) -> list[ArchiveEntry]:
    with zipfile.ZipFile(archive) as zf:
        return [ArchiveEntry(i.filename, i.is_dir(), _zip_kind(i), i.file_size) for i in zf.infolist()]


def extract_zip(archive: Path, tmp: Path, targets: dict[int, Path], meter: WriteMeter) -> None:
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

    def __init__(self, path: Path, name: str, meter: WriteMeter):
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

    def __init__(self, tmp: Path, relatives: Iterable[Path], meter: WriteMeter):
        self.tmp = tmp
        self.planned = {r.parts: r for r in relatives}
        self.writers: list[_FileWriter] = []
        self.meter = meter

    def create(self, filename: str) -> Py7zIO:
        # py7zr passes its own cleaned-up member name; cleaned the same way, it names our plan entry. It renames
        # a later entry of a name already seen (``x.png_0``), so the first one always gets the planned file.
        relative = self.planned.pop(relative_parts(filename), None)
        if relative is None:
            return _Discard()
        writer = _FileWriter(self.tmp / relative, relative.as_posix(), self.meter)
        self.writers.append(writer)
        return writer

    def close_all(self) -> None:
        for writer in self.writers:
            writer.close()


def list_7z(archive: Path) -> list[ArchiveEntry]:
    with py7zr.SevenZipFile(archive, mode="r") as sz:
        if sz.needs_password():
            raise FERError(f"{archive}: archive is encrypted; extract its images by hand")
        return [ArchiveEntry(f.filename, f.is_directory, _7z_kind(f), f.uncompressed or 0) for f in sz.files]


def extract_7z(archive: Path, tmp: Path, targets: dict[int, Path], meter: WriteMeter) -> None:
    factory = _PlannedWriters(tmp, targets.values(), meter)
    try:
        with py7zr.SevenZipFile(archive, mode="r") as sz:
            names = [f.filename for f in sz.files]
            sz.extract(targets=[names[i] for i in targets], factory=factory)
    finally:
        factory.close_all()


ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (
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


def archive_format(archive: Path) -> str:
    suffix = archive.suffix.lower()
    if suffix in (".zip", ".7z"):
        return suffix[1:]
    if zipfile.is_zipfile(archive):
        return "zip"
    if py7zr.is_7zfile(archive):
        return "7z"
    raise FERError(f"{archive}: neither a zip nor a 7z archive; replace it with the published file")
