"""Fixtures shared by unit and integration tests (loaded by tests/conftest.py as a plugin): an offline wandb,
a crafted checkpoint, the published archive sets and the archive table pinned to them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from fer_lightning.data.sources.published import PUBLISHED_ARCHIVES
from tests.conftest import compose_cfg
from tests.helpers.archive_fixtures import build_published_set, specs_with_blobs
from tests.helpers.eval_runs import save_run_config
from tests.helpers.prepare_inputs import distinct_content


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


class _Payload:
    """Unpickling this calls os.system: what a malicious .ckpt does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """A run dir (a real config) whose checkpoint is a pickle that would create ``marker``."""
    run_dir = tmp_path / "run"
    save_run_config(compose_cfg(["modality=fusion"], run_dir), run_dir)
    ckpt = run_dir / "checkpoints" / "evil.ckpt"
    ckpt.parent.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    with open(ckpt, "wb") as f:
        pickle.dump({"state_dict": {"x": _Payload(marker)}, "epoch": 0}, f)
    # the payload really runs when loaded unsafely, so "no marker" below means the loader refused it
    with open(ckpt, "rb") as f:
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    return ckpt, marker


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, tuple[Path, dict[str, str]]]:
    """Both archive sets, each with a corrupt image in its first archive: dataset -> (folder, blob ids)."""
    base = tmp_path_factory.mktemp("published")
    sets = {d: (base / d, build_published_set(base / d, d, corrupt=True)) for d in ("viri", "nvie")}
    sets["nvie"] = (base / "nvie", distinct_content(base / "nvie"))
    return sets


@pytest.fixture
def pinned(monkeypatch, published):
    """The archive table with the blob ids of the fixture archives, so dataset.verify=true applies."""
    for dataset, (_, blobs) in published.items():
        monkeypatch.setitem(PUBLISHED_ARCHIVES, dataset, specs_with_blobs(dataset, blobs))
