"""Builders for small archives shaped like the published ones, and a local HTTP server to fetch them from."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import stat
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import py7zr
from PIL import Image

from fer_lightning.data.sources.archive_table import PUBLISHED_ARCHIVES, ArchiveSpec

CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 20  # a JPEG header with no image data


def blob_id(data: bytes) -> str:
    """Git blob id computed independently of the code under test."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_blob_id(path: Path) -> str:
    return blob_id(Path(path).read_bytes())


def image_bytes(seed: int, fmt: str = "JPEG", size: int = 8, mode: str = "RGB") -> bytes:
    """A tiny image whose pixels depend on ``seed``, so every file has distinct content."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    img = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode=mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


Members = Mapping[str, bytes] | Iterable[tuple[str, bytes]]  # pairs: one name may appear twice


def _pairs(members: Members) -> Iterable[tuple[str, bytes]]:
    return members.items() if isinstance(members, Mapping) else members


def build_zip(path: Path, members: Members, *, symlinks: Mapping[str, str] | None = None) -> Path:
    """Write a zip with ``members`` (names are stored verbatim, even unsafe ones) and symlink entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in _pairs(members):
                zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
            for name, target in (symlinks or {}).items():
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.create_system = 3  # unix, so external_attr carries the file type
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, target)
    return path


def build_7z(path: Path, members: Members) -> Path:
    """Write a 7z archive; names py7zr would refuse (``../x``) are written through its unchecked path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with py7zr.SevenZipFile(path, "w") as sz:
        for name, data in _pairs(members):
            sz._writestr(data, name)
    return path


def build_7z_with_symlink(path: Path, scratch: Path, link_name: str, target: str) -> Path:
    """A 7z holding one image and one symlink entry (py7zr stores a symlink when not dereferencing)."""
    scratch.mkdir(parents=True, exist_ok=True)
    image = scratch / "ok.jpg"
    image.write_bytes(image_bytes(1))
    link = scratch / link_name
    link.symlink_to(target)
    with py7zr.SevenZipFile(path, "w") as sz:
        sz.write(image, "ok.jpg")
        sz.write(link, link_name)
    return path


# --------------------------------------------------------------------------------------------------
# Archive sets with exactly the published names


def _junk() -> dict[str, bytes]:
    return {
        "__MACOSX/._x.jpg": b"\x00\x05\x16\x07",
        "Thumbs.db": b"thumbs",
        ".DS_Store": b"ds",
        "desktop.ini": b"[.ShellClassInfo]",
        "readme.txt": b"not an image",
    }


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def _viri_members(spec: ArchiveSpec, n: int) -> dict[str, bytes]:
    label = spec.label
    if spec.modality == "visible":
        # Class folder and a subject folder inside, camera-style upper-case extensions.
        members = {f"{label}/S01/IMG_{i:03d}_vis.JPG": image_bytes(_seed(label, i, "v")) for i in range(1, n + 1)}
        members.update({f"{label}/{k}": v for k, v in _junk().items()})
    else:
        members = {
            f"{label}_IR/img_{i:03d}_IR.jpg": image_bytes(_seed(label, i, "i"), mode="L") for i in range(1, n + 1)
        }
        members["desktop.ini"] = b"[.ShellClassInfo]"
    return members


def _nvie_members(spec: ArchiveSpec, n: int) -> dict[str, bytes]:
    label = spec.label
    if spec.modality == "infrared":
        if label == "fear":  # names unrelated to the visible ones: only sorted order can pair them
            return {f"thermal/T{i}.png": image_bytes(100 + i, "PNG", mode="L") for i in range(1, n + 1)}
        return {f"IR/{i}.jpg": image_bytes(200 + i, mode="L") for i in range(1, n + 1)}
    if spec.part is None:
        numbers = range(1, n + 1)
    else:  # split classes: part 1 holds the first half, part 2 the rest
        half = n // 2
        numbers = range(1, half + 1) if spec.part == 1 else range(half + 1, n + 1)
    prefix = "fear_" if label == "fear" else ""
    members = {f"{label}/{prefix}{i}.JPG": image_bytes(300 + i) for i in numbers}
    members["__MACOSX/._1.JPG"] = b"\x00\x05\x16\x07"
    return members


def build_published_set(
    folder: Path, dataset: str, *, images_per_class: int = 4, corrupt: bool = False
) -> dict[str, str]:
    """Write every archive of ``dataset`` under its published name; returns name -> git blob id.

    With ``corrupt`` the first visible archive also holds ``broken.jpg``, a truncated JPEG.
    """
    folder.mkdir(parents=True, exist_ok=True)
    blobs: dict[str, str] = {}
    members_of = _viri_members if dataset == "viri" else _nvie_members
    for index, spec in enumerate(PUBLISHED_ARCHIVES[dataset]):
        members = members_of(spec, images_per_class)
        if corrupt and index == 0:
            members[f"{spec.label}/S01/broken.jpg"] = CORRUPT_JPEG
        path = folder / spec.name
        (build_7z if spec.name.endswith(".7z") else build_zip)(path, members)
        blobs[spec.name] = file_blob_id(path)
    return blobs


def specs_with_blobs(dataset: str, blobs: Mapping[str, str]) -> list[ArchiveSpec]:
    """The published table of ``dataset`` with the blob ids of locally built archives."""
    return [dataclasses.replace(s, blob_id=blobs[s.name]) for s in PUBLISHED_ARCHIVES[dataset]]


# --------------------------------------------------------------------------------------------------
# HTTP server on 127.0.0.1


class FileServer(ThreadingHTTPServer):
    """Serves ``root``; per-file faults can be armed to fire once."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), RangeRequestHandler)
        self.root = Path(root)
        self.support_range = True
        self.fail_once: dict[str, int] = {}  # name -> HTTP status to answer once
        self.drop_once: dict[str, int] = {}  # name -> bytes of the body sent before hanging up
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class RangeRequestHandler(BaseHTTPRequestHandler):
    """GET with single open-ended ``Range: bytes=N-`` support (http.server's handlers have none)."""

    server: FileServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        name = unquote(self.path.lstrip("/"))
        range_header = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((name, range_header))
            status = srv.fail_once.pop(name, None)
            drop = srv.drop_once.pop(name, None)
        if status is not None:
            self.send_error(status)
            return
        file = srv.root / name
        if "/" in name or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and srv.support_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@contextmanager
def serve_directory(root: Path) -> Iterator[FileServer]:
    """Serve ``root`` over HTTP on a free port of 127.0.0.1 for the duration of the block."""
    server = FileServer(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens, so connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
