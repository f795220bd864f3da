"""Fetching, verifying and safely extracting the published archives (no internet: 127.0.0.1 only)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import urllib.request
import warnings
import zipfile
from pathlib import Path

import pytest

from fer_lightning.data import extract
from fer_lightning.data.download import DownloadError, download
from fer_lightning.data.extract import EXTRACTED_MARKER_NAME, safe_extract
from fer_lightning.data.sources import archive_fetch
from fer_lightning.data.sources.archive_fetch import VERIFIED_CACHE_NAME, ensure_archives
from fer_lightning.data.sources.archive_table import (
    BASE_URL,
    PUBLISHED_ARCHIVES,
    SOURCE_COMMIT,
    ArchiveSpec,
    archive_url,
    parse_archive_name,
)
from fer_lightning.data.sources.published import collect_images, extract_all
from fer_lightning.errors import FERError
from fer_lightning.io import git_blob_sha1
from tests.helpers.archive_fixtures import (
    build_7z,
    build_7z_with_symlink,
    build_published_set,
    build_zip,
    closed_port_url,
    file_blob_id,
    image_bytes,
    serve_directory,
    specs_with_blobs,
)

FAST = {"retries": 3, "backoff": 0.0, "timeout": 5}


def _one_line(message: str) -> None:
    assert "\n" not in message and message.strip() == message


# --------------------------------------------------------------------------------------------------
# Table


def test_table_lists_every_published_archive_once():
    assert [s.name for s in PUBLISHED_ARCHIVES["viri"]][:2] == ["VIRI-Angry-Vis.zip", "VIRI-Angry-Ir.zip"]
    assert len(PUBLISHED_ARCHIVES["viri"]) == 10 and len(PUBLISHED_ARCHIVES["nvie"]) == 8
    assert {s.label for s in PUBLISHED_ARCHIVES["viri"]} == {"Angry", "Happy", "Neutral", "Sad", "Surprise"}
    assert {s.label for s in PUBLISHED_ARCHIVES["nvie"]} == {"fear", "disgust", "happy"}
    for specs in PUBLISHED_ARCHIVES.values():
        for spec in specs:
            assert len(spec.blob_id) == 40 and int(spec.blob_id, 16) >= 0
            assert spec.modality in ("visible", "infrared")
    happy_vis = [s for s in PUBLISHED_ARCHIVES["nvie"] if s.label == "happy" and s.modality == "visible"]
    assert [(s.name, s.part) for s in happy_vis] == [("NVIE-happy1-Vis.7z", 1), ("NVIE-happy2-Vis.zip", 2)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("VIRI-Angry-Vis.zip", ("viri", "Angry", "visible", None)),
        ("VIRI-Surprise-Ir.zip", ("viri", "Surprise", "infrared", None)),
        ("NVIE-happy1-Vis.7z", ("nvie", "happy", "visible", 1)),
        ("NVIE-disgust2-Vis.zip", ("nvie", "disgust", "visible", 2)),
        ("NVIE-fear-Ir.zip", ("nvie", "fear", "infrared", None)),
    ],
)
def test_parse_archive_name(name, expected):
    assert parse_archive_name(name) == expected


def test_parse_archive_name_rejects_other_names():
    with pytest.raises(FERError, match=r"other\.zip"):
        parse_archive_name("other.zip")


def test_archive_url_default_prefix_and_template():
    assert archive_url("NVIE-happy1-Vis.7z") == BASE_URL.format(commit=SOURCE_COMMIT, name="NVIE-happy1-Vis.7z")
    assert SOURCE_COMMIT in archive_url("a.zip")
    assert archive_url("a.zip", "http://127.0.0.1:9/x/") == "http://127.0.0.1:9/x/a.zip"
    assert archive_url("a.zip", "http://h/{commit}/{name}?raw=1") == f"http://h/{SOURCE_COMMIT}/a.zip?raw=1"


# --------------------------------------------------------------------------------------------------
# Hashing


# --------------------------------------------------------------------------------------------------
# download()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    data = b"".join(image_bytes(i) for i in range(20))
    (root / "VIRI-Angry-Vis.zip").write_bytes(data)
    with serve_directory(root) as server:
        yield server, "VIRI-Angry-Vis.zip", data


def test_download_verifies_and_renames(served, tmp_path):
    server, name, data = served
    dest = tmp_path / "raw" / name
    out = download(server.url + name, dest, expected_blob=file_blob_id(server.root / name), **FAST)
    assert out == dest and dest.read_bytes() == data
    assert not dest.with_name(name + ".part").exists()


def test_download_wrong_blob_removes_file(served, tmp_path):
    server, name, _ = served
    dest = tmp_path / "raw" / name
    wrong = "0" * 40
    with pytest.raises(FERError) as info:
        download(server.url + name, dest, expected_blob=wrong, **FAST)
    message = str(info.value)
    _one_line(message)
    assert name in message and wrong in message and file_blob_id(server.root / name) in message
    assert not dest.exists() and not dest.with_name(name + ".part").exists()


def test_interrupted_download_leaves_only_part_then_resumes(served, tmp_path):
    server, name, data = served
    dest = tmp_path / "raw" / name
    part = dest.with_name(name + ".part")
    server.drop_once[name] = 100
    with pytest.raises(DownloadError) as info:
        download(server.url + name, dest, expected_blob=None, retries=0, backoff=0, timeout=5)
    _one_line(str(info.value))
    assert not dest.exists() and part.read_bytes() == data[:100]

    download(server.url + name, dest, expected_blob=file_blob_id(server.root / name), **FAST)
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == (name, "bytes=100-")


def test_dropped_connection_is_resumed_within_one_call(served, tmp_path):
    server, name, data = served
    server.drop_once[name] = 333
    dest = tmp_path / name
    download(server.url + name, dest, expected_blob=file_blob_id(server.root / name), **FAST)
    assert dest.read_bytes() == data
    assert [r for _, r in server.requests] == [None, "bytes=333-"]


def test_resume_restarts_when_server_ignores_range(served, tmp_path):
    server, name, data = served
    server.support_range = False
    dest = tmp_path / name
    dest.with_name(name + ".part").write_bytes(data[:50])
    download(server.url + name, dest, expected_blob=file_blob_id(server.root / name), **FAST)
    assert dest.read_bytes() == data


def test_stale_part_from_other_file_is_redownloaded(served, tmp_path):
    server, name, data = served
    dest = tmp_path / name
    dest.with_name(name + ".part").write_bytes(b"x" * 50)  # same length prefix, wrong bytes
    download(server.url + name, dest, expected_blob=file_blob_id(server.root / name), **FAST)
    assert dest.read_bytes() == data


def test_complete_part_is_accepted_after_416(served, tmp_path):
    server, name, data = served
    dest = tmp_path / name
    dest.with_name(name + ".part").write_bytes(data)
    download(server.url + name, dest, expected_blob=file_blob_id(server.root / name), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [(name, f"bytes={len(data)}-")]


def test_download_retries_after_server_error(served, tmp_path):
    server, name, data = served
    server.fail_once[name] = 500
    dest = tmp_path / name
    download(server.url + name, dest, expected_blob=file_blob_id(server.root / name), **FAST)
    assert dest.read_bytes() == data and len(server.requests) == 2


def test_download_retries_timeouts_through_custom_opener(served, tmp_path):
    server, name, data = served
    calls = []

    def flaky(request, timeout):
        calls.append(timeout)
        if len(calls) == 1:
            raise TimeoutError("timed out")
        return urllib.request.urlopen(request, timeout=timeout)

    dest = tmp_path / name
    download(server.url + name, dest, expected_blob=None, retries=1, backoff=0, timeout=7, opener=flaky)
    assert dest.read_bytes() == data and calls == [7, 7]


def test_download_404_fails_at_once_naming_url(served, tmp_path):
    server, _, _ = served
    url = server.url + "NVIE-fear-Ir.zip"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "NVIE-fear-Ir.zip", expected_blob=None, **FAST)
    _one_line(str(info.value))
    assert url in str(info.value) and "404" in str(info.value)
    assert len(server.requests) == 1  # no retries for a missing file
    assert not (tmp_path / "NVIE-fear-Ir.zip").exists()


def test_download_gives_up_after_retries(tmp_path):
    url = closed_port_url() + "a.zip"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "a.zip", expected_blob=None, retries=2, backoff=0, timeout=2)
    assert "3 attempts" in str(info.value) and url in str(info.value)
    assert not (tmp_path / "a.zip").exists()


# --------------------------------------------------------------------------------------------------
# ensure_archives()


@pytest.fixture
def forbid_network(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_ensure_archives_offline_lists_every_missing_file_in_one_line(tmp_path):
    base = closed_port_url()
    raw = tmp_path / "raw" / "viri"
    with pytest.raises(FERError) as info:
        ensure_archives("viri", raw, download=True, verify=True, base_url=base, retries=0, backoff=0)
    message = str(info.value)
    _one_line(message)
    assert str(raw) in message
    for spec in PUBLISHED_ARCHIVES["viri"]:
        assert spec.name in message and archive_url(spec.name, base) in message
    assert not any(raw.glob("*.zip"))


def test_ensure_archives_without_download_never_opens_network(tmp_path, forbid_network):
    raw = tmp_path / "raw"
    with pytest.raises(FERError) as info:
        ensure_archives("nvie", raw, download=False, verify=True)
    message = str(info.value)
    _one_line(message)
    assert "dataset.download=true" in message and str(raw) in message
    for spec in PUBLISHED_ARCHIVES["nvie"]:
        assert spec.name in message and archive_url(spec.name) in message


def test_ensure_archives_uses_local_files_without_network(tmp_path, monkeypatch, forbid_network):
    raw = tmp_path / "raw"
    blobs = build_published_set(raw, "viri", images_per_class=2)
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "viri", specs_with_blobs("viri", blobs))
    found = ensure_archives("viri", raw, download=False, verify=True)
    assert [(s.name, p) for s, p in found] == [(n, raw / n) for n in blobs]
    cache = json.loads((raw / VERIFIED_CACHE_NAME).read_text())
    assert {n: e["blob"] for n, e in cache.items()} == blobs


def test_ensure_archives_downloads_then_reuses_cache(tmp_path, monkeypatch):
    served_dir = tmp_path / "served"
    blobs = build_published_set(served_dir, "nvie", images_per_class=2)
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "nvie", specs_with_blobs("nvie", blobs))
    raw = tmp_path / "raw"
    with serve_directory(served_dir) as server:
        found = ensure_archives("nvie", raw, download=True, verify=True, base_url=server.url, **FAST)
    assert all(p.read_bytes() == (served_dir / s.name).read_bytes() for s, p in found)
    assert len(server.requests) == len(blobs)

    calls = []
    monkeypatch.setattr(archive_fetch, "git_blob_sha1", lambda p: calls.append(p) or "")
    ensure_archives("nvie", raw, download=False, verify=True)
    assert calls == []  # sizes and mtimes unchanged: the cached blob ids are trusted


def test_ensure_archives_downloads_only_missing_files(tmp_path, monkeypatch):
    served_dir = tmp_path / "served"
    blobs = build_published_set(served_dir, "viri", images_per_class=1)
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "viri", specs_with_blobs("viri", blobs))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(served_dir / "VIRI-Sad-Ir.zip", raw)
    with serve_directory(served_dir) as server:
        ensure_archives("viri", raw, download=True, verify=True, base_url=server.url, **FAST)
    assert "VIRI-Sad-Ir.zip" not in {name for name, _ in server.requests}
    assert len(server.requests) == len(blobs) - 1


def test_ensure_archives_mismatch_is_an_error_when_verifying(tmp_path, forbid_network):
    raw = tmp_path / "raw"
    blobs = build_published_set(raw, "viri", images_per_class=1)  # real table: every blob mismatches
    with pytest.raises(FERError) as info:
        ensure_archives("viri", raw, download=False, verify=True)
    message = str(info.value)
    _one_line(message)
    assert "dataset.verify=false" in message
    for spec in PUBLISHED_ARCHIVES["viri"]:
        assert spec.name in message and spec.blob_id in message and blobs[spec.name] in message


def test_ensure_archives_single_mismatch_names_file_expected_actual(tmp_path, monkeypatch, forbid_network):
    raw = tmp_path / "raw"
    blobs = build_published_set(raw, "viri", images_per_class=1)
    specs = specs_with_blobs("viri", blobs)
    specs[3] = ArchiveSpec(specs[3].name, "f" * 40, specs[3].label, specs[3].modality)
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "viri", specs)
    with pytest.raises(FERError) as info:
        ensure_archives("viri", raw, download=False, verify=True)
    message = str(info.value)
    assert message.startswith(str(raw / specs[3].name))
    assert "f" * 40 in message and blobs[specs[3].name] in message and "dataset.verify=false" in message


def test_each_archive_is_hashed_once_from_verifying_to_extracting(tmp_path, monkeypatch, forbid_network):
    raw = tmp_path / "raw"
    blobs = build_published_set(raw, "viri", images_per_class=1)
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "viri", specs_with_blobs("viri", blobs))
    hashed = []

    def counting(path):
        hashed.append(Path(path).name)
        return git_blob_sha1(path)

    monkeypatch.setattr(archive_fetch, "git_blob_sha1", counting)
    monkeypatch.setattr(extract, "git_blob_sha1", counting)
    extracted = extract_all(ensure_archives("viri", raw, download=False, verify=True), tmp_path / "out")
    assert sorted(hashed) == sorted(blobs)  # verified once each; the fresh extraction reuses the blob id
    markers = [json.loads((r.dest / EXTRACTED_MARKER_NAME).read_text()) for _, r in extracted]
    assert {m["archive"]: m["blob"] for m in markers} == blobs
    hashed.clear()
    extract_all(ensure_archives("viri", raw, download=False, verify=True), tmp_path / "out")
    assert hashed == []  # unchanged archives and extractions: nothing is hashed


def test_ensure_archives_verify_false_warns_and_continues(tmp_path, monkeypatch, forbid_network):
    raw = tmp_path / "raw"
    blobs = build_published_set(raw, "viri", images_per_class=1)
    specs = specs_with_blobs("viri", blobs)
    bad = specs[0]
    specs[0] = ArchiveSpec(bad.name, "e" * 40, bad.label, bad.modality)
    monkeypatch.setitem(PUBLISHED_ARCHIVES, "viri", specs)
    with pytest.warns(UserWarning) as record:
        found = ensure_archives("viri", raw, download=False, verify=False)
    assert len(found) == 10
    assert len(record) == 1 and bad.name in str(record[0].message) and "e" * 40 in str(record[0].message)


def test_ensure_archives_unknown_dataset():
    with pytest.raises(FERError, match="viri"):
        ensure_archives("affectnet", Path("/nonexistent"), download=False, verify=True)


# --------------------------------------------------------------------------------------------------
# safe_extract()


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("evil", ["../evil.jpg", "ok/../../evil.jpg", "..\\evil.jpg", "C:/evil.jpg"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, evil):
    archive = build_zip(tmp_path / "in" / "VIRI-Angry-Vis.zip", {"a/ok.jpg": image_bytes(1), evil: b"x"})
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "extracted" / "VIRI-Angry-Vis"
    with pytest.raises(FERError) as info:
        safe_extract(archive, dest)
    message = str(info.value)
    _one_line(message)
    assert str(archive) in message and repr(evil) in message
    assert _tree(work) == set() and not (tmp_path / "evil.jpg").exists()


def test_absolute_entry_is_refused(tmp_path):
    outside = tmp_path / "outside" / "evil.jpg"
    archive = build_zip(tmp_path / "a.zip", {"ok.jpg": image_bytes(1), outside.as_posix(): b"x"})
    dest = tmp_path / "dest"
    with pytest.raises(FERError, match="absolute path") as info:
        safe_extract(archive, dest)
    assert outside.as_posix() in str(info.value)
    assert not outside.exists() and not (tmp_path / "outside").exists() and not dest.exists()
    assert _tree(tmp_path) == {"a.zip"}


def test_symlink_entry_in_zip_is_refused(tmp_path):
    archive = build_zip(tmp_path / "a.zip", {"ok.jpg": image_bytes(1)}, symlinks={"face.jpg": "/etc/passwd"})
    dest = tmp_path / "dest"
    with pytest.raises(FERError, match="symlink") as info:
        safe_extract(archive, dest)
    assert "'face.jpg'" in str(info.value) and str(archive) in str(info.value)
    assert _tree(tmp_path) == {"a.zip"}


def test_unsafe_7z_entries_are_refused(tmp_path):
    archive = build_7z(tmp_path / "NVIE-happy1-Vis.7z", {"ok.jpg": image_bytes(1), "../evil.jpg": b"x"})
    with pytest.raises(FERError, match=r"'\.\.' component"):
        safe_extract(archive, tmp_path / "dest")
    linked = build_7z_with_symlink(tmp_path / "l.7z", tmp_path / "scratch", "face.jpg", "/etc/passwd")
    with pytest.raises(FERError, match="symlink") as info:
        safe_extract(linked, tmp_path / "dest")
    assert "'face.jpg'" in str(info.value)
    assert not (tmp_path / "dest").exists() and not (tmp_path / "evil.jpg").exists()


def test_junk_and_non_images_are_skipped_and_reported(tmp_path):
    members = {
        "Angry/S01/IMG_001.JPG": image_bytes(1),
        "Angry/S01/img_002.Png": image_bytes(2, "PNG"),
        "__MACOSX/Angry/S01/._IMG_001.JPG": b"\x00",
        "Angry/._IMG_003.jpg": b"\x00",
        "Angry/Thumbs.db": b"x",
        "Angry/S01/.DS_Store": b"x",
        "Desktop.ini": b"x",
        "notes.txt": b"x",
        "Angry/LICENSE": b"x",
        "Angry/empty.jpg": b"",
        "Angry/": b"",
    }
    archive = build_zip(tmp_path / "VIRI-Angry-Vis.zip", members)
    result = safe_extract(archive, tmp_path / "out")
    assert result.images == [Path("Angry/S01/IMG_001.JPG"), Path("Angry/S01/img_002.Png")]
    assert dict(result.skipped) == {
        "__MACOSX/Angry/S01/._IMG_001.JPG": "macOS metadata folder",
        "Angry/._IMG_003.jpg": "macOS resource fork",
        "Angry/Thumbs.db": "OS metadata file",
        "Angry/S01/.DS_Store": "OS metadata file",
        "Desktop.ini": "OS metadata file",
        "notes.txt": "not an image (.txt)",
        "Angry/LICENSE": "not an image (no extension)",
        "Angry/empty.jpg": "empty file",
    }
    files = _tree(tmp_path / "out") - {"Angry", "Angry/S01"}
    assert files == {"Angry/S01/IMG_001.JPG", "Angry/S01/img_002.Png", EXTRACTED_MARKER_NAME}
    assert (tmp_path / "out" / "Angry/S01/IMG_001.JPG").read_bytes() == members["Angry/S01/IMG_001.JPG"]


def test_7z_nested_upper_case_extensions_extract_and_merge_with_zip_part(tmp_path):
    raw = tmp_path / "raw"
    blobs = build_published_set(raw, "nvie", images_per_class=4)
    specs = specs_with_blobs("nvie", blobs)
    extracted = extract_all([(s, raw / s.name) for s in specs], tmp_path / "extracted")
    by_name = {spec.name: result for spec, result in extracted}
    seven = by_name["NVIE-happy1-Vis.7z"]
    assert seven.images == [Path("happy/1.JPG"), Path("happy/2.JPG")]
    assert seven.skipped == [("__MACOSX/._1.JPG", "macOS metadata folder")]
    assert (seven.dest / "happy/1.JPG").read_bytes() == image_bytes(301)
    images = collect_images(extracted)
    assert sorted(p.name for p in images["visible"]["happy"]) == ["1.JPG", "2.JPG", "3.JPG", "4.JPG"]
    assert len(images["infrared"]["happy"]) == 4
    assert {p.parent.parent.name for p in images["visible"]["happy"]} == {
        "NVIE-happy1-Vis",
        "NVIE-happy2-Vis",
    }
    assert set(images["visible"]) == set(images["infrared"]) == {"fear", "disgust", "happy"}


def test_7z_empty_and_backslash_entries(tmp_path):
    archive = build_7z(
        tmp_path / "x.7z", {"a\\b\\1.JPG": image_bytes(1), "a/empty.png": b"", "a/2.jpg": image_bytes(2)}
    )
    result = safe_extract(archive, tmp_path / "out")
    assert result.images == [Path("a/2.jpg"), Path("a/b/1.JPG")]
    assert result.skipped == [("a/empty.png", "empty file")]
    assert (tmp_path / "out/a/b/1.JPG").read_bytes() == image_bytes(1)
    assert safe_extract(archive, tmp_path / "out") == result  # the marker's record, read back


@pytest.mark.parametrize("fmt", ["zip", "7z"])
@pytest.mark.parametrize("later", ["Sad/s0_0.png", "sad/S0_0.PNG"], ids=["same name", "case only"])
def test_a_repeated_name_keeps_the_first_entry_and_reports_the_later(tmp_path, fmt, later):
    first, other = image_bytes(1, "PNG"), image_bytes(2, "PNG")
    members = [("Sad/s0_0.png", first), ("Sad/s1_0.png", image_bytes(3, "PNG")), (later, other)]
    archive = (build_zip if fmt == "zip" else build_7z)(tmp_path / f"VIRI-Sad-Vis.{fmt}", members)
    out = tmp_path / "out"
    result = safe_extract(archive, out)
    on_disk = hashlib.sha1((out / "Sad/s0_0.png").read_bytes()).hexdigest()
    assert on_disk == hashlib.sha1(first).hexdigest() != hashlib.sha1(other).hexdigest()
    assert _tree(out) - {"Sad"} == {"Sad/s0_0.png", "Sad/s1_0.png", EXTRACTED_MARKER_NAME}
    assert result.images == [Path("Sad/s0_0.png"), Path("Sad/s1_0.png")]
    assert result.skipped == [(later, "same name (case aside) as the earlier entry 'Sad/s0_0.png', which is kept")]


def _zero_filled(fmt: str, path: Path, mb: float) -> Path:
    """An archive with one real image and ``zero.png``, ``mb`` MiB of zeros (a few KB compressed)."""
    members = {"ok.png": image_bytes(1, "PNG"), "zero.png": bytes(int(mb * (1 << 20)))}
    return (build_zip if fmt == "zip" else build_7z)(path.with_suffix(f".{fmt}"), members)


@pytest.mark.parametrize("fmt", ["zip", "7z"])
@pytest.mark.parametrize(
    "caps, key", [((1, 100), "max_entry_mb=1"), ((10, 1), "max_archive_mb=1")], ids=["entry", "archive"]
)
def test_an_entry_or_archive_over_its_size_cap_is_refused_and_nothing_is_kept(tmp_path, fmt, caps, key):
    archive = _zero_filled(fmt, tmp_path / "in" / "a", 1.5)
    assert archive.stat().st_size < (1 << 20) or fmt == "zip"
    work = tmp_path / "work"
    with pytest.raises(FERError) as info:
        safe_extract(archive, work / "extracted" / "a", caps=extract.SizeCaps(*caps))
    message = str(info.value)
    _one_line(message)
    assert message.startswith(f"{archive}: ") and "'zero.png'" in message and "1.5 MB" in message
    assert f"dataset.extract.{key};" in message and "raise dataset.extract." in message
    assert _tree(work) == set()


@pytest.mark.parametrize("fmt", ["zip", "7z"])
def test_sizes_understated_by_the_headers_are_capped_while_writing(tmp_path, fmt, monkeypatch):
    archive = _zero_filled(fmt, tmp_path / "in" / "a", 1.5)
    listing = extract.list_zip if fmt == "zip" else extract.list_7z

    def understated(path):
        return [dataclasses.replace(e, size=min(e.size, 10)) for e in listing(path)]

    monkeypatch.setattr(extract, f"list_{fmt}", understated)
    with pytest.raises(FERError, match=r"'zero\.png' expands to 1\.\d MB, over dataset\.extract\.max_entry_mb=1;"):
        safe_extract(archive, tmp_path / "work" / "a", caps=extract.SizeCaps(1, 100))
    assert _tree(tmp_path / "work") == set()


def test_extraction_is_idempotent(tmp_path, monkeypatch):
    archive = build_zip(tmp_path / "a.zip", {"x/1.jpg": image_bytes(1), "x/n.txt": b"t"})
    dest = tmp_path / "out"
    first = safe_extract(archive, dest)
    before = (dest / "x/1.jpg").stat().st_mtime_ns

    def no_reading(*args, **kwargs):
        pytest.fail("the archive was read again")

    monkeypatch.setattr(zipfile, "ZipFile", no_reading)
    second = safe_extract(archive, dest)
    assert second == first
    assert (dest / "x/1.jpg").stat().st_mtime_ns == before


def test_changed_archive_is_extracted_again(tmp_path):
    dest = tmp_path / "out"
    safe_extract(build_zip(tmp_path / "a.zip", {"old.jpg": image_bytes(1)}), dest)
    result = safe_extract(build_zip(tmp_path / "a.zip", {"new/one.jpg": image_bytes(2)}), dest)
    assert result.images == [Path("new/one.jpg")]
    assert not (dest / "old.jpg").exists()


def test_extraction_refuses_foreign_folder_and_cleans_temporaries(tmp_path):
    archive = build_zip(tmp_path / "a.zip", {"1.jpg": image_bytes(1)})
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(FERError, match="delete it"):
        safe_extract(archive, dest)
    assert (dest / "mine.txt").read_text() == "keep me"
    stale = tmp_path / ".other.tmp-abc"
    stale.mkdir()
    safe_extract(archive, tmp_path / "other")
    assert not stale.exists()
    assert not list(tmp_path.glob(".other.tmp-*"))


def test_corrupt_archive_is_a_one_line_error(tmp_path):
    archive = tmp_path / "VIRI-Sad-Ir.zip"
    archive.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FERError) as info:
        safe_extract(archive, tmp_path / "out")
    _one_line(str(info.value))
    assert str(archive) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_crc_error_mid_extraction_leaves_nothing(tmp_path):
    data = image_bytes(5)
    archive = build_zip(tmp_path / "a.zip", {"a.jpg": image_bytes(4), "b.jpg": data})
    raw = bytearray(archive.read_bytes())
    # Flip a byte of b.jpg's stored data so its CRC check fails after a.jpg was written.
    offset = raw.rfind(b"b.jpg", 0, raw.find(b"PK\x01\x02")) + len("b.jpg") + 2
    raw[offset] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(FERError, match="cannot extract"):
        safe_extract(archive, tmp_path / "out")
    assert _tree(tmp_path) == {"a.zip"}


def test_no_warnings_on_clean_path(tmp_path):
    archive = build_zip(tmp_path / "a.zip", {"1.jpg": image_bytes(1)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        safe_extract(archive, tmp_path / "out")
