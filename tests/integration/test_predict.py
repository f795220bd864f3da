"""predict: probabilities sum to 1 and the label equals evaluate's for the same image."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.predict import predict
from tests.helpers.eval_runs import compose_app, tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    return tiny_run(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def evaluated(run_dir, tmp_path_factory) -> list[dict]:
    """evaluate's per-sample predictions.csv rows for the run's last checkpoint."""
    out = tmp_path_factory.mktemp("eval_for_predict")
    evaluate(compose_app("eval", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], out))
    with open(out / "predictions.csv") as f:
        return list(csv.DictReader(f))


def _predict(run_dir: Path, out: Path, **inputs) -> dict | Path:
    overrides = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *(f"{k}={v}" for k, v in inputs.items())]
    return predict(compose_app("predict", overrides, out))


def _pairs_folder(folder: Path, root: Path, rows: list[dict]) -> Path:
    """An input_dir with the visible and infrared images of ``rows`` (manifest paths under ``root``)."""
    for row in rows:
        for m in ("visible", "infrared"):
            (folder / m).mkdir(parents=True, exist_ok=True)
            shutil.copy(root / row[m], folder / m / Path(row[m]).name)
    return folder


def test_prediction_matches_evaluate_on_the_same_images(run_dir, evaluated, data_dir, tmp_path, capsys):
    root = data_dir / "synthetic"
    for row in evaluated[:4]:
        out = _predict(run_dir, tmp_path, visible=root / row["visible"], infrared=root / row["infrared"])
        assert json.loads(capsys.readouterr().out) == out
        assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        # one meaning per name: "label" is the true class (predictions.csv), "prediction" the predicted one
        assert out["prediction"] == row["pred"] and "label" not in out
        for cls, p in out["probabilities"].items():
            assert p == pytest.approx(float(row[f"p_{cls}"]), abs=1e-5)


def test_input_dir_writes_predictions_csv(run_dir, evaluated, data_dir, tmp_path, capsys):
    root = data_dir / "synthetic"
    folder = _pairs_folder(tmp_path / "in", root, evaluated[:5])
    shutil.copy(root / evaluated[5]["visible"], folder / "visible" / "lonely.png")  # no infrared partner
    path = _predict(run_dir, tmp_path, input_dir=folder)
    assert "1 image(s) without a partner" in capsys.readouterr().err
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert path == tmp_path / "predictions.csv"
    assert len(rows) == 5
    with open(tmp_path / "rejected.csv") as f:
        assert list(csv.DictReader(f)) == [
            {"file": str(folder / "visible" / "lonely.png"), "reason": "no infrared image with the same file stem"}
        ]
    by_visible = {Path(r["visible"]).name: r for r in rows}
    for row in evaluated[:5]:
        got = by_visible[Path(row["visible"]).name]
        assert got["pred"] == row["pred"] and got["label"] == ""
        assert sum(float(v) for k, v in got.items() if k.startswith("p_")) == pytest.approx(1.0, abs=1e-4)
        for k, v in got.items():
            if k.startswith("p_"):
                assert float(v) == pytest.approx(float(row[k]), abs=1e-5)


def test_input_dir_predicts_every_readable_pair_and_lists_each_unreadable_image(
    run_dir, evaluated, data_dir, tmp_path, capsys
):
    root = data_dir / "synthetic"
    folder = _pairs_folder(tmp_path / "in", root, evaluated[:3])
    broken = folder / "visible" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))  # a PNG signature and nothing decodable
    shutil.copy(root / evaluated[3]["infrared"], folder / "infrared" / "broken.png")
    path = _predict(run_dir, tmp_path / "out", input_dir=folder)
    err = capsys.readouterr().err
    assert f"1 unreadable image(s) skipped, e.g. {broken} (unreadable image (" in err
    with open(path) as f:
        assert sorted(Path(r["visible"]).name for r in csv.DictReader(f)) == sorted(
            Path(r["visible"]).name for r in evaluated[:3]
        )
    with open(tmp_path / "out" / "rejected.csv") as f:
        rejected = {r["file"]: r["reason"] for r in csv.DictReader(f)}
    assert set(rejected) == {str(broken), str(folder / "infrared" / "broken.png")}
    assert rejected[str(broken)].startswith("unreadable image (") and str(broken) not in rejected[str(broken)]
    assert rejected[str(folder / "infrared" / "broken.png")] == "its visible partner broken.png is unreadable"

    for row in evaluated[:3]:  # nothing readable left: refused, nothing written
        (folder / "visible" / Path(row["visible"]).name).write_bytes(b"not an image")
    with pytest.raises(
        FERError, match=rf"^input_dir={folder}: no sample could be read \(4 unreadable image\(s\)"
    ) as exc:
        _predict(run_dir, tmp_path / "none", input_dir=folder)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "none" / "predictions.csv").exists() and not (tmp_path / "none" / "rejected.csv").exists()


def test_wrong_inputs_for_the_modality_are_one_line(run_dir, data_dir, tmp_path):
    one = next((data_dir / "synthetic" / "visible").rglob("*.png"))
    with pytest.raises(FERError, match=r"fusion model \(missing infrared\)") as exc:
        _predict(run_dir, tmp_path, visible=one)
    assert "\n" not in str(exc.value)
    with pytest.raises(FERError, match="no such image"):
        _predict(run_dir, tmp_path, visible=one, infrared=tmp_path / "none.png")
    with pytest.raises(FERError, match=rf"infrared={one.parent}: is a directory; .*input_dir="):
        _predict(run_dir, tmp_path, visible=one, infrared=one.parent)
    with pytest.raises(FERError, match=r"needs .*infrared"):
        _predict(run_dir, tmp_path, input_dir=one.parent)


def test_explain_given_a_folder_says_it_is_one_and_not_to_pass_input_dir_to_explain(run_dir, data_dir, tmp_path):
    from fer_lightning.analysis.cam import explain

    one = next((data_dir / "synthetic" / "visible").rglob("*.png"))
    args = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"visible={one.parent}", f"infrared={one}"]
    with pytest.raises(FERError) as exc:
        explain(compose_app("explain", args, tmp_path / "x"))
    msg = str(exc.value)
    assert msg.startswith(f"visible={one.parent}: is a directory; pass one image file") and "\n" not in msg
    assert "fer_lightning.predict also takes input_dir=" in msg  # explain has no input_dir
