"""prepare and train as commands and runs: offline failures, first-use preparation, folder datasets that
train, a killed prepare."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from fer_lightning.data.sources.archive_table import PUBLISHED_ARCHIVES, SOURCE_COMMIT
from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.prepare import prepare
from fer_lightning.runs.engine import Run, train_and_test
from fer_lightning.runs.resume import resolve_ckpt_path
from tests.conftest import REPO, compose_cfg
from tests.helpers.archive_fixtures import (
    closed_port_url,
)
from tests.helpers.eval_runs import compose_app, save_run_config
from tests.helpers.prepare_inputs import (
    FAST_TRAIN,
    copy_raw,
    folder_cfg,
    make_folder,
    prepare_cfg,
    write_image,
)


def test_no_archives_and_no_network_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fer_lightning.prepare",
            "dataset=viri",
            "dataset.download=false",
            f"paths.data_dir={data}",
            f"paths.log_dir={tmp_path}/logs",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    line = lines[0]
    raw = data / "raw" / "viri"
    assert line.startswith(f"error: 10 viri archives missing from {raw}: VIRI-Angry-Vis.zip (https://github.com/")
    for spec in PUBLISHED_ARCHIVES["viri"]:
        assert f"{spec.name} (https://github.com/naseemmuhammadtahir/raw-data/raw/{SOURCE_COMMIT}/{spec.name})" in line
    assert line.endswith(f"put them in {raw}, or set dataset.download=true to download them")


def test_unreachable_server_names_the_reason_and_train_stops_the_same_way(tmp_path):
    data = tmp_path / "data"
    args = ["dataset=viri", f"dataset.base_url={closed_port_url()}", "dataset.retries=0"]
    with pytest.raises(FERError, match=r"missing from .* and could not be downloaded \(.*refused") as exc:
        prepare(prepare_cfg(args, data))
    assert "\n" not in str(exc.value) and "VIRI-Surprise-Ir.zip" in str(exc.value)
    with pytest.raises(FERError, match="could not be downloaded"):
        train_and_test(compose_cfg([*args, *FAST_TRAIN], tmp_path / "run", data))


@pytest.mark.slow  # two ResNet-18 branches: ~10 s on an idle 2-core CPU, 40 s on a busy one
def test_train_prepares_viri_on_first_use_and_trains_fusion(tmp_path, published, pinned):
    data = tmp_path / "data"
    copy_raw(published, "viri", data)
    # 4 pairs per class: 70/15/15 rather than the study's 393/83/90 sizes, so every split gets a sample
    overrides = ["dataset=viri", "modality=fusion", "dataset.split.ratios=[0.7,0.15,0.15]", *FAST_TRAIN]
    results, run = train_and_test(compose_cfg(overrides, tmp_path / "f", data))
    assert run.datamodule.classes == ["Angry", "Happy", "Neutral", "Sad", "Surprise"]
    assert (data / "viri" / "contact_sheet.png").is_file()
    assert results["dataset"] == "viri" and results["test"]["n"] > 0


def test_one_modality_folder_trains_visible(tmp_path):
    src = make_folder(tmp_path / "src", modalities=("visible",))
    results, run = train_and_test(
        compose_cfg(
            ["dataset=folder", f"dataset.root={src}", "modality=visible", *FAST_TRAIN],
            tmp_path / "r",
            tmp_path / "data",
        )
    )
    assert run.datamodule.classes == ["Angry", "Happy"]
    assert results["modality"] == "visible"


def test_one_manifest_check_warns_a_resumed_fit_and_refuses_evaluate(tmp_path, caplog):
    """The manifest a checkpoint was trained on is checked in one place: resuming a fit from it goes on with a
    warning, evaluating it is refused unless allowed."""
    src = make_folder(tmp_path / "src", modalities=("visible",))
    data = tmp_path / "data"
    overrides = ["dataset=folder", f"dataset.root={src}", "modality=visible", "logger=none", *FAST_TRAIN[1:]]
    overrides += ["budget.steps=null", "budget.val_checks=null", "trainer.max_epochs=1"]  # one epoch: last.ckpt
    cfg = compose_cfg(overrides, tmp_path / "r", data)
    train_and_test(cfg)
    save_run_config(cfg, tmp_path / "r")
    ckpt = tmp_path / "r" / "checkpoints" / "last.ckpt"
    write_image(src / "visible" / "Angry" / "s9_Angry.JPG", 4242)
    with caplog.at_level(logging.WARNING):
        resumed = Run.for_training(compose_cfg([*overrides, f"ckpt_path={ckpt}"], tmp_path / "r2", data))
        # what Run.fit resumes from (the fit itself would stop at once: the checkpoint is at its last epoch)
        assert resolve_ckpt_path(str(ckpt), resumed.output_dir, resumed.datamodule) == str(ckpt)
    assert "the samples changed (1 added, 0 removed" in caplog.text
    assert "changed since last.ckpt was written" in caplog.text
    with pytest.raises(FERError, match=r"changed since last.ckpt was written \(sha1 [0-9a-f]{12} -> [0-9a-f]{12}\)"):
        evaluate(compose_app("eval", [f"ckpt_path={ckpt}"], tmp_path / "e"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_temporaries_of_a_killed_prepare_are_removed_by_the_next(tmp_path):
    src = make_folder(tmp_path / "src")
    data = tmp_path / "data"
    prepare(folder_cfg(src, data))
    root = next((data / "folder").iterdir())
    pid = _dead_pid()
    converted = next((root / "converted").rglob("*.png")).parent
    stale = [root / f".contact_sheet.{pid}.tmp.png", converted / f".s0_Angry_IR.tif.png.{pid}.tmp.png"]
    for path in stale:
        path.write_bytes(b"half a file")
    live = root / f".manifest.csv.{os.getppid()}.tmp"  # a writer that is still running keeps its file
    live.write_bytes(b"in progress")
    prepare(folder_cfg(src, data))
    assert not any(p.exists() for p in stale) and live.exists()
