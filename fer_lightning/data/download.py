"""HTTP download with resume and retries: a file appears only complete (and verified, when its id is known)."""

from __future__ import annotations

import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fer_lightning.errors import FERError, one_line
from fer_lightning.io import commit, git_blob_sha1

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "fer_lightning-archive-fetch/1"


class DownloadError(FERError):
    """A download that failed for network or server reasons; ``reason`` is the short cause."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class _Retryable(Exception):
    pass


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
        raise _Retryable(one_line(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(one_line(exc) or type(exc).__name__) from exc


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
        raise FERError(f"{part}: cannot write ({one_line(exc)}); fix the folder's permissions") from exc
    with fh:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                reason = one_line(exc) or type(exc).__name__
                raise _Retryable(f"read failed after {written} bytes ({reason})") from exc
            if not chunk:
                return written
            try:
                fh.write(chunk)
            except OSError as exc:
                raise FERError(f"{part}: cannot write ({one_line(exc)}); free disk space and rerun") from exc
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
        commit(part, dest)
        return dest
