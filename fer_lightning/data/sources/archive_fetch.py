"""Making a dataset's published archives available: local files verified against their git blob ids (hashed once,
cached by size and mtime), missing ones downloaded, one message for every file that is wrong or missing."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fer_lightning.data.download import DownloadError, download
from fer_lightning.data.sources.archive_table import ArchiveSpec, archive_url, specs_for
from fer_lightning.errors import FERError, one_line
from fer_lightning.io import atomic_write_text, git_blob_sha1

logger = logging.getLogger(__name__)

# Config keys named in messages, so the user knows what to change.
VERIFY_KEY = "dataset.verify"
DOWNLOAD_KEY = "dataset.download"

VERIFIED_CACHE_NAME = ".verified.json"


class BlobCache:
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
            atomic_write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only data folder only costs re-hashing next time
            logger.debug("cannot write %s: %s", self.path, exc)
        self.dirty = False


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
    """Make every archive of ``dataset`` available in ``raw_dir``, in :data:`PUBLISHED_ARCHIVES` order.

    Local files are checked against their git blob id (cached in ``raw_dir/.verified.json`` by size
    and mtime, so a second run does not re-hash). A mismatch is an error when ``verify`` is true and
    a warning otherwise. Missing files are downloaded when ``download`` is true (from ``base_url``,
    see :func:`archive_url`); the network is never touched when it is false.

    Raises:
        FERError: one message listing every missing file with its URL, or every mismatching file.
    """
    specs = specs_for(dataset)
    raw_dir = Path(raw_dir)
    cache = BlobCache(raw_dir / VERIFIED_CACHE_NAME)
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
    cache: BlobCache,
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


def _check_blobs(specs: Iterable[ArchiveSpec], raw_dir: Path, cache: BlobCache, *, verify: bool) -> None:
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
        f"{count} missing from {raw_dir} and could not be downloaded ({one_line(reason)}): {listing}; "
        f"download them into {raw_dir} by hand and rerun"
    )
