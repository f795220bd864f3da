"""Fetch, verify and safely extract the archives the study published.

The archives are pinned to one commit of the study's repository and identified by their git blob
id, ``sha1(b"blob <size>\\0" + bytes)``, which is what ``git hash-object`` prints; anyone can check a
file by hand against the table below.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import py7zr
import py7zr.exceptions
from py7zr.io import Py7zIO, WriterFactory

from fer_lightning.data.images import IMAGE_EXTENSIONS
from fer_lightning.data.manifest import atomic_write_text
from fer_lightning.errors import FERError

logger = logging.getLogger(__name__)

SOURCE_COMMIT = "d5f655d9b88c319c87514fa929a025361c35259b"
BASE_URL = "https://github.com/naseemmuhammadtahir/raw-data/raw/{commit}/{name}"

# Config keys named in messages, so the user knows what to change.
VERIFY_KEY = "dataset.verify"
DOWNLOAD_KEY = "dataset.download"

VERIFIED_CACHE_NAME = ".verified.json"
EXTRACTED_MARKER_NAME = ".extracted.json"
_MARKER_VERSION = 1
_CHUNK = 1 << 20
_USER_AGENT = "fer_lightning-archive-fetch/1"

# name, git blob id: exactly as published at SOURCE_COMMIT.
_PUBLISHED = """
VIRI-Angry-Vis.zip     f91542fdb1f3506d869947cb817d3c64523c5cb8
VIRI-Angry-Ir.zip      f265496b2285576475a6cd55c1304447e01d69e4
VIRI-Happy-Vis.zip     d0653c28f88a2d86283aa9791468df5cc51c4b1e
VIRI-Happy-Ir.zip      398f1355ef7667894b56c083eba4bd4ca92466cc
VIRI-Neutral-Vis.zip   a8ce692f1f59fb270f4299e13207e5601c5c334b
VIRI-Neutral-Ir.zip    c0d848366b0b5ba844981bdf3c9ebf678a7d6248
VIRI-Sad-Vis.zip       34eac837e42f29f794ac2dade9ddf232d2e3e572
VIRI-Sad-Ir.zip        d39e54a970c9b72cfbe99667f02bceb3cbd22864
VIRI-Surprise-Vis.zip  c4f6f7215971c277259a0567d65ad718c6b51bf4
VIRI-Surprise-Ir.zip   c0fdea04ec60b57eb7ec5c53fd964ea03d62a266
NVIE-disgust1-Vis.zip  cc6f8d54c706e23f919e9000650418808016275b
NVIE-disgust2-Vis.zip  0c910f4ca1027005b01b966fbb75af5b4a26772b
NVIE-disgust-Ir.zip    bbd3b4cda449ce3b06ff388ef911899e42772a67
NVIE-fear-Vis.zip      fbb72f422f7deafc4d7d3a5d1f4684dfe09c240c
NVIE-fear-Ir.zip       701d2f997cbf92997f950973bd50707f8efea5d5
NVIE-happy1-Vis.7z     cc86dfda85f88e92948fd8fe0055e52204f92280
NVIE-happy2-Vis.zip    3e7a22d40d70d61e77e09f3958f9235dbd1e2c2b
NVIE-happy-Ir.zip      2595a6d2473a7eb3d5017fa108b76b00661778c7
"""

_NAME_RE = re.compile(
    r"^(?P<dataset>VIRI|NVIE)-(?P<label>[A-Za-z]+?)(?P<part>\d+)?-(?P<modality>Vis|Ir)\.(?:zip|7z)$",
    re.IGNORECASE,
)
_MODALITIES = {"vis": "visible", "ir": "infrared"}


# --------------------------------------------------------------------------------------------------
# The archive table


@dataclass(frozen=True)
class ArchiveSpec:
    """One published archive. ``label`` keeps the case of the published name (``Angry``, ``fear``)."""

    name: str
    blob_id: str
    label: str
    modality: str  # "visible" or "infrared"
    part: int | None = None  # 1, 2 for classes split over several archives

    @property
    def dataset(self) -> str:
        return parse_archive_name(self.name)[0]

    @property
    def folder_name(self) -> str:
        """The name without its archive extension, used as the extraction folder."""
        return self.name.rsplit(".", 1)[0]


def parse_archive_name(name: str) -> tuple[str, str, str, int | None]:
    """Split a published archive name into ``(dataset, label, modality, part)``.

    ``NVIE-happy1-Vis.7z`` -> ``("nvie", "happy", "visible", 1)``;
    ``VIRI-Angry-Ir.zip`` -> ``("viri", "Angry", "infrared", None)``.
    """
    match = _NAME_RE.match(name)
    if match is None:
        raise FERError(f"{name}: not a published archive name; expected <VIRI|NVIE>-<class>[part]-<Vis|Ir>.<zip|7z>")
    part = match["part"]
    return (
        match["dataset"].lower(),
        match["label"],
        _MODALITIES[match["modality"].lower()],
        int(part) if part else None,
    )


def _build_table(text: str) -> dict[str, list[ArchiveSpec]]:
    table: dict[str, list[ArchiveSpec]] = {}
    for line in text.strip().splitlines():
        name, blob_id = line.split()
        dataset, label, modality, part = parse_archive_name(name)
        table.setdefault(dataset, []).append(ArchiveSpec(name, blob_id, label, modality, part))
    return table


ARCHIVES: dict[str, list[ArchiveSpec]] = _build_table(_PUBLISHED)


def archive_url(name: str, base_url: str | None = None) -> str:
    """URL of archive ``name``; ``base_url`` is a prefix, or a template with ``{name}`` (and ``{commit}``)."""
    quoted = urllib.parse.quote(name)
    template = BASE_URL if base_url is None else base_url
    if "{name}" in template:
        return template.format(commit=SOURCE_COMMIT, name=quoted)
    return template.rstrip("/") + "/" + quoted


def _specs_for(dataset: str) -> list[ArchiveSpec]:
    specs = ARCHIVES.get(dataset.lower())
    if specs is None:
        raise FERError(f"dataset {dataset!r} has no published archives; choose one of {', '.join(ARCHIVES)}")
    return specs


# --------------------------------------------------------------------------------------------------
# Hashing


def git_blob_sha1(path: str | Path) -> str:
    """The id ``git hash-object <path>`` prints: ``sha1(b"blob <size>\\0" + content)``, read in chunks."""
    path = Path(path)
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest = hashlib.sha1(b"blob %d\0" % size)
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _BlobCache:
    """``.verified.json``: name -> size, mtime_ns, blob, so unchanged archives are hashed once."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = self._load()
        self.dirty = False

    def _load(self) -> dict[str, Any]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def blob(self, file: Path) -> str:
        st = file.stat()
        entry = self.entries.get(file.name)
        if (
            isinstance(entry, dict)
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
            and isinstance(entry.get("blob"), str)
        ):
            return entry["blob"]
        blob = git_blob_sha1(file)
        self.record(file, blob)
        return blob

    def record(self, file: Path, blob: str) -> None:
        st = file.stat()
        self.entries[file.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blob": blob}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            _write_json_atomic(self.path, self.entries)
        except OSError as exc:  # a read-only data folder only costs re-hashing next time
            logger.debug("cannot write %s: %s", self.path, exc)
        self.dirty = False


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


# --------------------------------------------------------------------------------------------------
# Downloading


class DownloadError(FERError):
    """A download that failed for network or server reasons; ``reason`` is the short cause."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class _Retryable(Exception):
    pass


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); ``bytes */200`` -> (None, 200)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _open(url: str, offset: int, timeout: float, urlopen: Callable[..., Any]) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        if exc.code == 416:
            raise exc
        reason = f"HTTP {exc.code} {exc.reason}"
        raise DownloadError(f"{url}: {reason}; check the URL or download the file by hand", reason) from exc
    except urllib.error.URLError as exc:
        raise _Retryable(_one_line(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(_one_line(exc) or type(exc).__name__) from exc


def _fetch_to_part(url: str, part: Path, timeout: float, urlopen: Callable[..., Any]) -> bool:
    """One attempt to complete ``part``; returns whether it kept bytes from an earlier attempt."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout, urlopen)
    except urllib.error.HTTPError as exc:  # 416: the range starts at or past the end of the file
        _, total = _content_range(exc.headers.get("Content-Range") if exc.headers else None)
        if total == offset:
            return True
        part.unlink(missing_ok=True)
        raise _Retryable("discarded a partial download longer than the file") from exc
    with response:
        status = getattr(response, "status", None) or response.getcode()
        resumed = bool(offset) and status == 206
        if resumed and _content_range(response.headers.get("Content-Range"))[0] != offset:
            part.unlink(missing_ok=True)
            raise _Retryable("server answered with an unexpected byte range")
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        written = _copy_response(response, part, append=resumed)
    if expected is not None and written < expected:
        raise _Retryable(f"connection closed after {written} of {expected} bytes")
    return resumed


def _copy_response(response: Any, part: Path, *, append: bool) -> int:
    written = 0
    try:
        fh = part.open("ab" if append else "wb")
    except OSError as exc:
        raise FERError(f"{part}: cannot write ({_one_line(exc)}); fix the folder's permissions") from exc
    with fh:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                reason = _one_line(exc) or type(exc).__name__
                raise _Retryable(f"read failed after {written} bytes ({reason})") from exc
            if not chunk:
                return written
            try:
                fh.write(chunk)
            except OSError as exc:
                raise FERError(f"{part}: cannot write ({_one_line(exc)}); free disk space and rerun") from exc
            written += len(chunk)


def download(
    url: str,
    dest: str | Path,
    *,
    expected_blob: str | None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60,
    opener: Callable[..., Any] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a ``.part`` left by an earlier try.

    ``dest`` only ever appears complete and (when ``expected_blob`` is given) verified: the data is
    streamed into ``<dest>.part`` and renamed at the end. Network errors, timeouts, 5xx answers and
    short reads are retried ``retries`` times, waiting ``backoff * 2**i`` seconds, each retry resuming
    with an HTTP Range request. ``opener`` replaces ``urllib.request.urlopen`` (same signature).

    Raises:
        DownloadError: 4xx answer (at once) or still failing after all retries; the ``.part`` is kept.
        FERError: the blob id does not match (the file is deleted) or the file cannot be written.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    urlopen = opener if opener is not None else urllib.request.urlopen
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    restarted = False
    while True:
        try:
            resumed = _fetch_to_part(url, part, timeout, urlopen)
        except _Retryable as exc:
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"{url}: download failed after {failures} attempt{'s' if failures > 1 else ''} ({exc}); "
                    "check the network and "
                    f"rerun (the partial file {part.name} is kept and resumed) or download it to {dest}",
                    str(exc),
                ) from exc
            delay = backoff * 2 ** (failures - 1)
            logger.warning("%s: %s; retry %d/%d in %.1f s", url, exc, failures, retries, delay)
            time.sleep(delay)
            continue
        if expected_blob is not None:
            actual = git_blob_sha1(part)
            if actual != expected_blob.lower():
                part.unlink(missing_ok=True)
                if resumed and not restarted:
                    # The kept .part may hold bytes of another version of the file; one clean
                    # download tells a stale partial file from a wrong URL or blob id.
                    logger.warning("%s: resumed download does not verify; downloading it again", url)
                    restarted = True
                    continue
                raise FERError(
                    f"{dest}: git blob id {actual} does not match expected {expected_blob} "
                    f"(downloaded from {url}); the file was deleted: check the URL, or rerun"
                )
        os.replace(part, dest)
        return dest


# --------------------------------------------------------------------------------------------------
# Finding, verifying and fetching a dataset's archives


def ensure_archives(
    dataset: str,
    raw_dir: str | Path,
    *,
    download: bool,
    verify: bool,
    base_url: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60,
) -> list[tuple[ArchiveSpec, Path]]:
    """Make every archive of ``dataset`` available in ``raw_dir``, in :data:`ARCHIVES` order.

    Local files are checked against their git blob id (cached in ``raw_dir/.verified.json`` by size
    and mtime, so a second run does not re-hash). A mismatch is an error when ``verify`` is true and
    a warning otherwise. Missing files are downloaded when ``download`` is true (from ``base_url``,
    see :func:`archive_url`); the network is never touched when it is false.

    Raises:
        FERError: one message listing every missing file with its URL, or every mismatching file.
    """
    specs = _specs_for(dataset)
    raw_dir = Path(raw_dir)
    cache = _BlobCache(raw_dir / VERIFIED_CACHE_NAME)
    present = [s for s in specs if (raw_dir / s.name).is_file()]
    missing = [s for s in specs if not (raw_dir / s.name).is_file()]
    try:
        _check_blobs(present, raw_dir, cache, verify=verify)
        if missing and not download:
            raise FERError(_missing_message(dataset, missing, raw_dir, base_url, reason=None))
        for index, spec in enumerate(missing):
            dest = raw_dir / spec.name
            try:
                _fetch_one(
                    spec,
                    dest,
                    cache,
                    verify=verify,
                    base_url=base_url,
                    retries=retries,
                    backoff=backoff,
                    timeout=timeout,
                )
            except DownloadError as exc:
                # Stop at the first failure: when the network is down, each further file would
                # only spend its own retries on the same outcome.
                raise FERError(
                    _missing_message(dataset, missing[index:], raw_dir, base_url, reason=exc.reason)
                ) from exc
    finally:
        cache.save()
    return [(spec, raw_dir / spec.name) for spec in specs]


def _fetch_one(
    spec: ArchiveSpec,
    dest: Path,
    cache: _BlobCache,
    *,
    verify: bool,
    base_url: str | None,
    retries: int,
    backoff: float,
    timeout: float,
) -> None:
    url = archive_url(spec.name, base_url)
    logger.info("downloading %s", url)
    download(
        url,
        dest,
        expected_blob=spec.blob_id if verify else None,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
    )
    if verify:
        cache.record(dest, spec.blob_id)
    else:
        _check_blobs([spec], dest.parent, cache, verify=False)


def _check_blobs(specs: Iterable[ArchiveSpec], raw_dir: Path, cache: _BlobCache, *, verify: bool) -> None:
    mismatches = []
    for spec in specs:
        path = raw_dir / spec.name
        actual = cache.blob(path)
        if actual != spec.blob_id:
            mismatches.append((path, spec.blob_id, actual))
    if not mismatches:
        return
    if verify:
        if len(mismatches) == 1:
            path, expected, actual = mismatches[0]
            raise FERError(
                f"{path}: git blob id {actual} does not match expected {expected}; delete the file to "
                f"download it again, or set {VERIFY_KEY}=false to use it anyway"
            )
        listing = ", ".join(f"{p.name} (expected {e}, actual {a})" for p, e, a in mismatches)
        raise FERError(
            f"{len(mismatches)} archives in {raw_dir} do not match their git blob ids: {listing}; delete "
            f"them to download them again, or set {VERIFY_KEY}=false to use them anyway"
        )
    for path, expected, actual in mismatches:
        warnings.warn(
            f"{path}: git blob id {actual} does not match expected {expected}; "
            f"using it anyway because {VERIFY_KEY}=false",
            stacklevel=3,
        )


def _missing_message(
    dataset: str, missing: Sequence[ArchiveSpec], raw_dir: Path, base_url: str | None, reason: str | None
) -> str:
    listing = ", ".join(f"{s.name} ({archive_url(s.name, base_url)})" for s in missing)
    count = f"{len(missing)} {dataset} archive{'s' if len(missing) > 1 else ''}"
    if reason is None:
        return (
            f"{count} missing from {raw_dir}: {listing}; put them in {raw_dir}, "
            f"or set {DOWNLOAD_KEY}=true to download them"
        )
    return (
        f"{count} missing from {raw_dir} and could not be downloaded ({_one_line(reason)}): {listing}; "
        f"download them into {raw_dir} by hand and rerun"
    )


# --------------------------------------------------------------------------------------------------
# Safe extraction

_JUNK_FOLDERS = frozenset({"__macosx"})
_JUNK_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class ExtractResult:
    """``images`` are paths relative to ``dest``; ``skipped`` holds ``(entry, reason)`` pairs."""

    archive: Path
    dest: Path
    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reused: bool = False  # True when an earlier complete extraction was found and kept

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


def _skip_reason(parts: tuple[str, ...]) -> str | None:
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


def _plan(archive: Path, dest: Path, entries: Sequence[_Entry]) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Validate every entry before anything is written; map entries to extract to relative paths."""
    for entry in entries:
        reason = _unsafe_reason(entry)
        if reason is not None:
            raise FERError(
                f"{archive}: entry {entry.name!r} {reason}; refusing to extract this archive "
                "(delete it and download it again)"
            )
    root = dest.resolve()
    targets: dict[str, Path] = {}
    seen: set[tuple[str, ...]] = set()
    skipped: list[tuple[str, str]] = []
    for entry in entries:
        parts = _relative_parts(entry.name)
        if entry.is_dir or not parts:
            continue
        reason = _skip_reason(parts)
        if reason is None and entry.size == 0:
            reason = "empty file"
        if reason is None and parts in seen:
            reason = "duplicate entry"
        if reason is not None:
            skipped.append((entry.name, reason))
            continue
        relative = Path(*parts)
        if not (root / relative).resolve().is_relative_to(root):
            raise FERError(f"{archive}: entry {entry.name!r} resolves outside {dest}; refusing to extract")
        seen.add(parts)
        targets[entry.name] = relative
    return targets, skipped


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


def _extract_zip(archive: Path, tmp: Path, targets: dict[str, Path]) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            relative = targets.get(info.filename)
            if relative is None:
                continue
            out = tmp / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


def _7z_kind(f: Any) -> str | None:
    if f.is_symlink or f.is_junction:
        return "symlink"
    if f.is_socket:
        return "special file"
    return None


class _FileWriter(Py7zIO):
    """Streams one 7z member straight to its planned file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("wb")

    def write(self, s: bytes | bytearray) -> int:
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

    def __init__(self, tmp: Path, relatives: Iterable[Path]):
        self.tmp = tmp
        self.planned = {r.parts: r for r in relatives}
        self.writers: list[_FileWriter] = []

    def create(self, filename: str) -> Py7zIO:
        # py7zr passes its own cleaned-up member name; cleaned the same way, it names our plan entry.
        relative = self.planned.pop(_relative_parts(filename), None)
        if relative is None:  # a later duplicate of a name already written
            return _Discard()
        writer = _FileWriter(self.tmp / relative)
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


def _extract_7z(archive: Path, tmp: Path, targets: dict[str, Path]) -> None:
    factory = _PlannedWriters(tmp, targets.values())
    try:
        with py7zr.SevenZipFile(archive, mode="r") as sz:
            sz.extract(targets=list(targets), factory=factory)
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


def _remove_stale_temporaries(dest: Path) -> None:
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def safe_extract(archive: str | Path, dest: str | Path, *, blob_id: str | None = None) -> ExtractResult:
    """Extract the images of a zip or 7z ``archive`` into ``dest``, refusing unsafe entries.

    Every entry name is validated before anything is written: an absolute path, a drive letter, a
    ``..`` component, a symlink or a special file makes the whole archive fail. Images are streamed
    into a temporary sibling folder that is renamed to ``dest`` once complete, so ``dest`` is either
    absent or a whole extraction; a marker (``.extracted.json``, recording the archive's name, size,
    mtime and blob id) makes a second call return at once. OS junk and non-images are skipped and
    reported. ``blob_id`` (when the caller already knows it) saves hashing the archive.

    Raises:
        FERError: unsafe entry, unreadable archive, or ``dest`` exists but is not an extraction.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FERError(f"{archive}: archive not found; download it first")
    fmt = _archive_format(archive)
    marker = _read_marker(dest)
    if marker is not None and _marker_is_current(marker, archive, dest, blob_id):
        images = [Path(p) for p in marker["images"]]
        return ExtractResult(archive, dest, images, [tuple(s) for s in marker["skipped"]], reused=True)
    if marker is None and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FERError(f"{dest}: exists but holds no complete extraction of {archive.name}; delete it and rerun")
    try:
        entries = _list_zip(archive) if fmt == "zip" else _list_7z(archive)
        targets, skipped = _plan(archive, dest, entries)
    except _ARCHIVE_ERRORS as exc:
        raise _cannot_extract(archive, exc) from exc
    blob = blob_id if blob_id is not None else git_blob_sha1(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        try:
            (_extract_zip if fmt == "zip" else _extract_7z)(archive, tmp, targets)
        except _ARCHIVE_ERRORS as exc:
            raise _cannot_extract(archive, exc) from exc
        images = sorted(targets.values(), key=lambda p: p.as_posix())
        _write_marker(tmp, archive, blob, images, skipped)
        if dest.exists():  # an outdated extraction (its marker names other bytes) or an empty folder
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExtractResult(archive, dest, images, skipped)


def _cannot_extract(archive: Path, exc: BaseException) -> FERError:
    return FERError(
        f"{archive}: cannot extract ({_one_line(exc) or type(exc).__name__}); delete it to download it again"
    )


def _write_marker(tmp: Path, archive: Path, blob: str, images: list[Path], skipped: list[tuple[str, str]]):
    st = archive.stat()
    _write_json_atomic(
        tmp / EXTRACTED_MARKER_NAME,
        {
            "version": _MARKER_VERSION,
            "archive": archive.name,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "blob": blob,
            "images": [p.as_posix() for p in images],
            "skipped": [list(s) for s in skipped],
        },
    )


def extract_all(
    archives: Iterable[tuple[ArchiveSpec, Path]], extract_root: str | Path
) -> list[tuple[ArchiveSpec, ExtractResult]]:
    """:func:`safe_extract` each archive into ``extract_root/<archive name without extension>``."""
    root = Path(extract_root)
    return [(spec, safe_extract(path, root / spec.folder_name)) for spec, path in archives]


def collect_images(
    extracted: Iterable[tuple[ArchiveSpec, ExtractResult]],
) -> dict[str, dict[str, list[Path]]]:
    """``{modality: {label: [absolute image paths]}}``, merging the parts of split classes."""
    collected: dict[str, dict[str, list[Path]]] = {"visible": {}, "infrared": {}}
    for spec, result in extracted:
        collected.setdefault(spec.modality, {}).setdefault(spec.label, []).extend(result.image_paths)
    return collected
