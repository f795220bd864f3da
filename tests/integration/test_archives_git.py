"""The published-archive tools checked against git itself (spawns git)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from fer_lightning.io import git_blob_sha1


@pytest.mark.parametrize("size", [0, 1, 5000, (1 << 20) + 7])
def test_git_blob_sha1_matches_git_hash_object(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert git_blob_sha1(path) == expected
    if size == 0:
        assert expected == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's well-known empty blob
    git = shutil.which("git")
    if git:  # hash-object without -w only reads the file
        out = subprocess.run([git, "hash-object", str(path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected
