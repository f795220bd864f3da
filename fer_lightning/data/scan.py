"""Checking images once: content hash, mode and a full decode of every file, cached in ``.scan.json`` by size and
mtime, so a second prepare decodes nothing when nothing changed."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from fer_lightning.data.images import UnreadableImage, load_rgb
from fer_lightning.io import atomic_write_text, file_sha1

log = logging.getLogger(__name__)

SCAN_CACHE = ".scan.json"
_SCAN_VERSION = 1


def _scan_one(path: Path) -> dict:
    st = path.stat()
    entry = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha1": file_sha1(path),
        "mode": None,
        "error": None,
    }
    try:
        load_rgb(path)  # a full decode, as training will do, so truncated files show up now
        with Image.open(path) as img:
            entry["mode"] = img.mode
    except UnreadableImage as exc:
        entry["error"] = exc.reason(path)
    return entry


class ScanCache:
    """``{file: {size, mtime_ns, sha1, mode, error[, converted]}}``; callers may add to an entry and set ``dirty``."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        self.entries: dict[str, dict] = data.get("files", {}) if data.get("version") == _SCAN_VERSION else {}
        self.dirty = False

    def scan(self, files: Iterable[Path]) -> dict[Path, dict]:
        out: dict[Path, dict] = {}
        todo = []
        for path in files:
            entry = self.entries.get(str(path))
            st = path.stat()
            if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
                out[path] = entry
            else:
                todo.append(path)
        if todo:
            log.info("checking %d image(s)", len(todo))
            # Decoding releases the GIL, so threads overlap it without pickling arrays between processes.
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                for path, entry in zip(todo, pool.map(_scan_one, todo), strict=True):
                    out[path] = self.entries[str(path)] = entry
            self.dirty = True
        return out

    def save(self) -> None:
        if self.dirty:
            atomic_write_text(self.path, json.dumps({"version": _SCAN_VERSION, "files": self.entries}))
            self.dirty = False
