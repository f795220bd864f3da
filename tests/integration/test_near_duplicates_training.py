"""Near duplicates across splits: train, evaluate and report warn."""

from __future__ import annotations

import pytest

from fer_lightning.analysis.results_table import report
from fer_lightning.evaluate import evaluate
from fer_lightning.runs import train_and_test
from tests.conftest import compose_cfg
from tests.helpers.eval_runs import compose_app, save_run_config
from tests.helpers.settings import COPIES


@pytest.mark.slow
def test_train_evaluate_and_report_warn_when_test_samples_have_near_duplicates_in_training(tmp_path, capsys):
    data = tmp_path / "data"
    overrides = [*COPIES, "modality=visible", "logger=none", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]
    run_dir = tmp_path / "leaky"
    cfg = compose_cfg([*overrides, "dataset.split.near_duplicates=off"], run_dir, data)
    results, _ = train_and_test(cfg)
    save_run_config(cfg, run_dir)
    share = results["near_duplicate_test_share"]
    assert 0 < share <= 1
    err = capsys.readouterr().err
    assert err.count("near_duplicate_test_share=") == 1 and f"({100 * share:.1f} %)" in err

    again = evaluate(compose_app("eval", [f"ckpt_path={results['best_checkpoint']}"], tmp_path / "eval"))
    assert again["near_duplicate_test_share"] == share
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "near-duplicate" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "overstate" in lines[0]

    clean = compose_cfg(overrides, tmp_path / "clean", data)  # the default: group
    assert train_and_test(clean)[0]["near_duplicate_test_share"] == 0
    assert "near_duplicate_test_share=" not in capsys.readouterr().err

    report(tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "near-duplicate" in line]
    assert len(lines) == 1 and "1 run(s) tested samples with a near-duplicate" in lines[0]
    assert "leaky" in lines[0] and "Warning: 1 run(s)" in (tmp_path / "report.md").read_text()
