"""Bad values on the command line end in one ``error:`` line and exit 2, never a traceback, and write no result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY
from tests.helpers.commands import one_error_line, train_cli
from tests.helpers.eval_runs import tiny_run


def test_the_command_line_exits_2_with_one_line(tmp_path):
    """The same path in a real process: exit status and stderr as the user sees them."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "fer_lightning.train", "modality=foo", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert one_error_line(proc) == "error: modality=foo: no such modality; choose one of fusion, infrared, visible"


# Refused before any data is generated: Hydra's own errors and the run-config check.
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=abc", "seed='abc': the seed must be a non-negative integer"),
        ("modality=foo", "modality=foo: no such modality; choose one of fusion, infrared, visible"),
        ("dataset=bar", "dataset=bar: no such dataset; choose one of folder, nvie, synthetic, synthetic_small, viri"),
        (
            "dataset.split.group_regex=^([A-Z]{2})",
            """quote the value: 'dataset.split.group_regex="^([A-Z]{2})"'""",
        ),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: train for at least one epoch"),
        ("budget.steps=0", "budget.steps=0: use an integer >= 1, or null"),
        ("budget.val_checks=2.5", "budget.val_checks=2.5: use an integer >= 1, or null"),
        ("no_such.key=1", "no_such.key: Key 'no_such' is not in struct; check the key name"),
        ("model.optimizer.lr=-1", "model.optimizer.lr=-1: use a finite number > 0, e.g. 0.001"),
        ("model.optimizer.lr=0", "model.optimizer.lr=0: use a finite number > 0, e.g. 0.001 (with 0 the model"),
        ("model.optimizer.lr=nan", "model.optimizer.lr=nan: use a finite number > 0"),
        ("+model.optimizer.weight_decay=-1", "model.optimizer.weight_decay=-1: use a finite number >= 0"),
    ],
)
def test_bad_override_is_one_line(tmp_path, override, expected):
    line = one_error_line(train_cli(tmp_path, override))
    assert expected in line
    assert not (tmp_path / "run" / "results.json").exists()


# The grid's settings are refused before any checkpoint is read (this one does not exist), naming the key as typed.
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("severities=[high]", "severities=[high]: 'high' is not a severity; use integers from 0 (none) to 5 (worst)"),
        ("severities=[1,9]", "severities=[1,9]: 9 is not a severity; use integers from 0 (none) to 5"),
        ("severities=[]", "severities=[]: no severity to test; use integers from 0 (none) to 5"),
        ("modalities=[foo]", "modalities=[foo]: no such modality 'foo'; use some of visible, infrared, or"),
        ("kinds=[]", "kinds=[]: no corruption to test; use some of noise, blur, occlusion"),
        ("kinds=[fog]", "kinds=[fog]: unknown corruption 'fog'; use some of noise, blur"),
        ("corrupt_seed=-1", "corrupt_seed=-1: use an integer >= 0"),
    ],
)
def test_bad_robustness_grids_are_one_line_naming_the_key_as_typed(tmp_path, override, expected):
    proc = train_cli(tmp_path, f"ckpt_path={tmp_path / 'none.ckpt'}", override, command="robustness")
    assert expected in one_error_line(proc)


def test_a_run_that_never_validated_writes_no_result_and_says_how_to_fix_it(tmp_path, data_dir):
    common = [*TINY, f"paths.data_dir={data_dir}", "modality=visible", "trainer.max_epochs=1"]
    line = one_error_line(train_cli(tmp_path, *common, "+trainer.limit_val_batches=0"))
    assert "the run never validated" in line and "limit_val_batches=0" in line
    assert "trainer.limit_val_batches > 0" in line
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.fixture(scope="module")
def visible_ckpt(tmp_path_factory, data_dir) -> Path:
    return tiny_run(tmp_path_factory, data_dir, modality="visible") / "checkpoints" / "last.ckpt"


def test_bad_resume_checkpoints_are_one_line(tmp_path, data_dir, visible_ckpt):
    common = [*TINY, f"paths.data_dir={data_dir}", "trainer.max_epochs=1"]
    random_bytes = tmp_path / "random.ckpt"
    random_bytes.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(visible_ckpt.read_bytes()[:5000])
    cases = {
        random_bytes: "not a readable checkpoint",
        truncated: "not a readable checkpoint",
        visible_ckpt: "a visible checkpoint cannot resume a modality=fusion run; pass modality=visible",
        next(visible_ckpt.parent.glob("best-*.ckpt")): "holds weights only (a best-validation checkpoint)",
    }
    for ckpt, expected in cases.items():
        line = one_error_line(train_cli(tmp_path, *common, "modality=fusion", f"ckpt_path={ckpt}"))
        assert f"ckpt_path={ckpt}" in line and expected in line
        assert not (tmp_path / "run" / "results.json").exists()


def test_an_invalid_value_in_a_sweep_is_refused_before_any_job_and_counted(tmp_path):
    sweep = tmp_path / "sweep"
    proc = train_cli(tmp_path, "-m", "modality=visible,foo", "seed=0,1", f"hydra.sweep.dir={sweep}")
    line = one_error_line(proc)
    assert "modality=foo: no such modality in the sweep; choose from fusion, infrared, visible" in line
    assert "none of the 4 jobs was started" in line
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_jobs"] == 4 and summary["n_started"] == summary["n_completed"] == 0
    assert summary["n_not_started"] == 4 and summary["n_failed"] == 0 and summary["failed"] == []
    assert summary["invalid"] == [{"key": "modality", "values": ["foo"], "choices": ["fusion", "infrared", "visible"]}]
    assert [p.name for p in sweep.iterdir()] == ["sweep_summary.json"]  # no job dir: nothing ran


def test_only_last_ckpt_carries_the_optimiser_state(visible_ckpt):
    import torch

    best = next(visible_ckpt.parent.glob("best-*.ckpt"))
    b, last = (torch.load(f, map_location="cpu", weights_only=True) for f in (best, visible_ckpt))
    assert "optimizer_states" in last and "optimizer_states" not in b
    assert b["state_dict"].keys() == last["state_dict"].keys()
    assert b["hyper_parameters"]["class_names"] and b["SyntheticDataModule"]["stats"]  # what evaluate reads
    assert best.stat().st_size < 0.6 * visible_ckpt.stat().st_size


def test_a_long_cause_is_cut_at_a_sentence_or_word_with_an_ellipsis(tmp_path):
    import torch

    from fer_lightning.errors import FERError, one_line, shortened
    from fer_lightning.io import read_checkpoint

    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FERError) as exc:
        read_checkpoint(path)
    with pytest.raises(RuntimeError) as cause:
        torch.load(path, weights_only=True)
    full = one_line(cause.value)
    assert len(full) > 120  # torch's own text, several sentences
    reason = str(exc.value).split(": not a readable checkpoint (", 1)[1].rsplit("); it may be truncated", 1)[0]
    assert len(reason) <= 120 and reason.endswith("...")
    kept = reason.removesuffix("...")
    assert full.startswith(kept) and full[len(kept)] in " ."  # whole words: the cut falls on a boundary
    assert shortened("a" * 300) == "a" * 117 + "..."  # one long word (a path) is cut inside, not dropped
    assert shortened("short and sweet") == "short and sweet"
