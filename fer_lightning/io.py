"""File plumbing shared by every stage: atomic writes, content hashes, checkpoints read without running code.

A reader (another process, or this one after a crash) sees either the old complete file or the new complete
file: data goes to a per-process temporary sibling, is fsynced, and is renamed over the target; the directory
entry is fsynced too, so the rename survives a power loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import socket
import struct
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fer_lightning.errors import FERError, shortened

TMP_MARK = ".tmp"
# Another machine's temporary on a shared file system cannot be checked for a live writer: it is removed only once
# it has not been written to for this long.
FOREIGN_STALE_SECONDS = 24 * 3600


def _host() -> str:
    """This machine's name as a temporary name carries it: letters, digits and ``_`` (no ``.`` or ``-``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a file's (or a directory's entries') data to disk; a no-op where the platform refuses."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """A hidden per-process temporary name beside ``path`` (same file system, so the rename is atomic).

    ``suffix`` keeps an extension libraries dispatch on (e.g. ``.png`` for PIL / matplotlib).
    """
    path = Path(path)
    # host and pid: on a file system shared by several nodes, pids alone collide
    return path.with_name(f".{path.name}.{_host()}-{os.getpid()}{TMP_MARK}{suffix}")


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsyncs ``tmp``, renames it over ``path`` and fsyncs the directory entry."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path``, on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, suffix)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through :func:`atomic_path`: a reader sees the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through :func:`atomic_path`: a reader sees the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(
    folder: str | os.PathLike, pattern: str = f".*{TMP_MARK}*", recursive: bool = False
) -> list[Path]:
    """Deletes temporary files a killed process left in ``folder`` (and below it when ``recursive``); returns
    what was removed.

    A temporary of this machine is removed when its writer process is gone; one written by another machine (a
    shared file system) only when untouched for :data:`FOREIGN_STALE_SECONDS`, since its writer cannot be checked.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.rglob(pattern) if recursive else folder.glob(pattern):
        if not tmp.is_file():  # a folder (e.g. an extraction in progress) is its owner's to clean
            continue
        if _writer_alive(tmp):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _writer(name: str) -> tuple[str | None, int | None]:
    """``(host, pid)`` of ``.<name>.<host>-<pid>.tmp<suffix>``; host None for the older ``.<name>.<pid>.tmp``."""
    last = name.split(TMP_MARK, 1)[0].rsplit(".", 1)[-1]
    host, _, pid = last.rpartition("-")
    return (host or None), (int(pid) if pid.isdigit() else None)


def _writer_alive(tmp: Path) -> bool:
    host, pid = _writer(tmp.name)
    if host is not None and host != _host():
        try:
            return time.time() - tmp.stat().st_mtime < FOREIGN_STALE_SECONDS
        except OSError:
            return True
    return pid is not None and pid != os.getpid() and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_sha1(path: str | os.PathLike) -> str:
    """The SHA-1 hex digest of the file's bytes (read in 1 MiB chunks), as ``manifest.csv`` records it."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """Git's blob id of a file, ``sha1(b"blob <size>\\0" + bytes)``: verifiable without knowing sizes."""
    size = os.path.getsize(path)
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The contents of a Lightning checkpoint, or one FERError naming ``key`` and the file.

    Args:
        path: the file.
        key: the config key the path came from, for the message (``ckpt_path``, ``model.infrared_init``).
    """
    path = Path(str(path)).expanduser()
    if path.is_dir():
        raise FERError(f"{key}={path}: is a directory; pass a .ckpt file from a run's checkpoints/ folder")
    if not path.is_file():
        raise FERError(f"{key}={path}: no such checkpoint file")
    checkpoint = load_tensors(path, key)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise FERError(f"{key}={path}: not a fer-lightning checkpoint (no state_dict); pick a file from checkpoints/")
    return checkpoint


def load_tensors(path: Path, key: str, unreadable: str = "not a readable checkpoint") -> Any:
    """``torch.load(weights_only=True)`` of a file the user named under ``key``, its failures as one FERError:
    a pickle that would build more than tensors (and might run code) is "not a safe one", never loaded."""
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it is about to refuse; the refusal says enough
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _looks_like_pickle(path):
            raise FERError(f"{key}={path}: {unreadable} (not a torch file); train again or pick another file") from exc
        # weights_only refused what the pickle would build (and maybe run).
        raise FERError(
            f"{key}={path}: not a fer-lightning checkpoint, or not a safe one (it holds Python objects "
            "beyond tensors); use a file written by python -m fer_lightning.train or torch.save(state_dict)"
        ) from exc
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,  # the weights-only unpickler on an opcode that finds its stack empty
        struct.error,  # ... or on an opcode whose argument the file cuts short
    ) as exc:
        raise FERError(
            f"{key}={path}: {unreadable} ({_reason(exc)}); it may be truncated: train again or pick another file"
        ) from exc


def _looks_like_pickle(path: Path) -> bool:
    """torch's zip container, or a bare pickle (protocol 2+ starts with the PROTO opcode), not random bytes."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def _reason(exc: BaseException) -> str:
    return shortened(exc) or type(exc).__name__
