"""export: ONNX graphs that match PyTorch on the run's data, and predict model= that matches predict ckpt_path=
through a runtime that never imports torch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_lightning.calibration import sidecar_path
from fer_lightning.errors import FERError
from fer_lightning.evaluate import evaluate
from fer_lightning.io import file_sha1
from fer_lightning.models.fusion import FUSIONS
from fer_lightning.models.networks import FusionNet
from fer_lightning.predict import predict
from fer_lightning.runs import export as export_module
from fer_lightning.runs.export import OnnxGraph, export_checkpoint
from fer_lightning.runs.predict import collect_inputs, command_line
from fer_lightning.runtime import softmax
from tests.conftest import REPO
from tests.helpers.eval_runs import compose_app, isolated_checkpoint, tiny_run

ort = pytest.importorskip("onnxruntime")  # the [export] extra


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, data_dir) -> Path:
    """The default fusion (gated) run's checkpoint, in a run dir of its own (a test calibrates it)."""
    return isolated_checkpoint(tiny_run(tmp_path_factory, data_dir), tmp_path_factory.mktemp("export_run"))


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported")
    export_checkpoint(compose_app("export", [f"ckpt_path={ckpt}"], out))
    return out


@pytest.fixture(scope="module")
def samples(data_dir) -> list[dict]:
    with open(data_dir / "synthetic" / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"][:4]
    root = data_dir / "synthetic"
    return [{m: root / r[m] for m in ("visible", "infrared")} for r in rows]


def assert_same_prediction(a: dict, b: dict) -> None:
    """The same JSON (keys, predicted class, inputs, missing camera), probabilities within 1e-5."""
    assert {k: v for k, v in a.items() if k != "probabilities"} == {k: v for k, v in b.items() if k != "probabilities"}
    assert list(a["probabilities"]) == list(b["probabilities"])
    assert np.allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5, rtol=0)


def _predict(out: Path, source: str, **inputs) -> dict | Path:
    """predict with the command line's overrides (``model=`` renamed as the command does)."""
    args = command_line([source, *(f"{k}={v}" for k, v in inputs.items())])
    return predict(compose_app("predict", args, out))


def test_export_writes_the_graphs_and_model_json(exported, ckpt, data_dir):
    meta = json.loads((exported / "model.json").read_text())
    checkpoint = torch.load(ckpt, weights_only=True)
    state = checkpoint["SyntheticDataModule"]
    assert meta["classes"] == checkpoint["hyper_parameters"]["class_names"]
    assert meta["modality"] == "fusion" and meta["fusion"] == "gated" and meta["inputs"] == ["visible", "infrared"]
    assert meta["input_size"] == 32 and meta["cache_side"] == state["cache_side"]
    assert meta["normalization"]["infrared"] == {
        "mean": list(state["stats"]["infrared"][0]),
        "std": list(state["stats"]["infrared"][1]),
    }
    assert meta["checkpoint_sha1"] == file_sha1(ckpt) and meta["temperature"] is None
    # gated fusion predicts from one camera: a graph each
    assert meta["graphs"] == {
        "visible+infrared": "model.onnx",
        "visible": "model.visible.onnx",
        "infrared": "model.infrared.onnx",
    }
    assert all((exported / name).stat().st_size > 0 for name in meta["graphs"].values())
    parity = meta["parity"]
    with open(data_dir / "synthetic" / "manifest.csv") as f:
        n_test = sum(r["split"] == "test" for r in csv.DictReader(f))
    assert parity["split"] == "test" and parity["n"] == min(32, n_test) and parity["tolerance"] == 1e-4
    assert 0 <= parity["max_abs_diff"] <= 1e-4 and set(parity["per_graph"]) == set(meta["graphs"])


def test_predict_from_the_onnx_model_equals_predict_from_the_checkpoint(exported, ckpt, samples, tmp_path, capsys):
    for sample in samples:
        a = _predict(tmp_path / "a", f"ckpt_path={ckpt}", **sample)
        b = _predict(tmp_path / "b", f"model={exported / 'model.onnx'}", **sample)
        assert_same_prediction(a, b)
    # one camera, where the mode allows it
    one = {"visible": samples[0]["visible"], "allow_missing": "true"}
    a = _predict(tmp_path / "c", f"ckpt_path={ckpt}", **one)
    b = _predict(tmp_path / "d", f"model={exported / 'model.onnx'}", **one)
    assert b["missing"] == ["infrared"]
    assert_same_prediction(a, b)


def test_the_predict_command_takes_model(exported, samples, tmp_path):
    sample = samples[0]
    args = [f"model={exported / 'model.onnx'}", f"visible={sample['visible']}", f"infrared={sample['infrared']}"]
    proc = subprocess.run(
        [sys.executable, "-m", "fer_lightning.predict", *args, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = _predict(tmp_path / "again", f"model={exported / 'model.onnx'}", **sample)
    assert json.loads(proc.stdout) == expected


def test_predict_a_folder_from_the_onnx_model(exported, ckpt, samples, tmp_path):
    folder = tmp_path / "in"
    for sample in samples:
        for m, path in sample.items():
            (folder / m).mkdir(parents=True, exist_ok=True)
            (folder / m / path.name).write_bytes(path.read_bytes())
    tables = []
    for source, out in ((f"ckpt_path={ckpt}", tmp_path / "a"), (f"model={exported / 'model.onnx'}", tmp_path / "b")):
        path = _predict(out, source, input_dir=folder)
        with open(path) as f:
            tables.append(list(csv.DictReader(f)))
    assert [r["pred"] for r in tables[0]] == [r["pred"] for r in tables[1]] and len(tables[0]) == len(samples)
    for x, y in zip(*tables, strict=True):
        assert all(float(x[k]) == pytest.approx(float(y[k]), abs=1e-5) for k in x if k.startswith("p_"))


def test_the_runtime_runs_with_torch_blocked(exported, ckpt, samples, tmp_path):
    expected = _predict(tmp_path, f"ckpt_path={ckpt}", **samples[0])
    code = f"""
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
from fer_lightning.runtime import OnnxModel
model = OnnxModel({str(exported / "model.onnx")!r})
probs = model.predict([{{"visible": {str(samples[0]["visible"])!r}, "infrared": {str(samples[0]["infrared"])!r}}}])
print(json.dumps(dict(zip(model.classes, probs[0].tolist()))))
assert not any(name == "torch" or name.startswith("torch.") for name, m in sys.modules.items() if m is not None)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    for cls, p in expected["probabilities"].items():
        assert got[cls] == pytest.approx(p, abs=1e-5)


def test_a_stored_temperature_is_exported_and_applied(ckpt, samples, tmp_path):
    evaluated = evaluate(compose_app("eval", [f"ckpt_path={ckpt}", "calibrate=temperature"], tmp_path / "eval"))
    t = evaluated["temperature"]
    try:
        export_checkpoint(compose_app("export", [f"ckpt_path={ckpt}"], tmp_path / "export"))
        assert json.loads((tmp_path / "export" / "model.json").read_text())["temperature"] == t
        a = _predict(tmp_path / "a", f"ckpt_path={ckpt}", **samples[0])
        b = _predict(tmp_path / "b", f"model={tmp_path / 'export' / 'model.onnx'}", **samples[0])
        raw = _predict(tmp_path / "c", f"ckpt_path={ckpt}", calibrated="false", **samples[0])
        assert a["temperature"] == b["temperature"] == t and "temperature" not in raw
        assert_same_prediction(a, b)
        p_raw = np.array(list(raw["probabilities"].values()))
        p_cal = softmax(np.log(p_raw), t)
        assert np.allclose(list(a["probabilities"].values()), p_cal, atol=1e-5)
        assert np.allclose(list(b["probabilities"].values()), p_cal, atol=1e-5)
    finally:
        sidecar_path(ckpt).unlink()


def test_a_parity_failure_writes_nothing(ckpt, tmp_path, monkeypatch):
    """The check catches a graph that skips the run's normalisation (what a hand-written export easily does)."""
    monkeypatch.setattr(
        OnnxGraph,
        "forward",
        lambda self, *x: self.model({m: v.float() / 255 for m, v in zip(self.inputs, x, strict=True)})["logits"],
    )
    with pytest.raises(FERError, match=r"ONNX and PyTorch probabilities differ by up to .* over tolerance=0.0001"):
        export_checkpoint(compose_app("export", [f"ckpt_path={ckpt}"], tmp_path))
    assert not list(tmp_path.glob("model*"))


def test_an_untraceable_model_is_one_line(ckpt, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: data-dependent control flow\nsecond line")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(FERError) as exc:
        export_checkpoint(compose_app("export", [f"ckpt_path={ckpt}"], tmp_path))
    message = str(exc.value)
    assert message.startswith("model.fusion=gated (visible+infrared): cannot be exported to ONNX (RuntimeError: ")
    assert "\n" not in message and not list(tmp_path.glob("model*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["format=tflite"], "format=tflite: use onnx"),
        (["parity_samples=1"], "parity_samples=1: use an integer > 2"),
        (["tolerance=0"], "tolerance=0: use a probability difference in"),
    ],
)
def test_bad_export_settings_are_one_line(ckpt, tmp_path, args, message):
    with pytest.raises(FERError, match=message):
        export_checkpoint(compose_app("export", [f"ckpt_path={ckpt}", *args], tmp_path))


def test_export_without_onnxruntime_is_one_line(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as in a core install, without the [export] extra
    with pytest.raises(FERError, match=r"the export needs onnx and onnxruntime \(onnxruntime is not installed\); pip"):
        export_checkpoint(compose_app("export", [f"ckpt_path={ckpt}"], tmp_path))


def test_predict_refuses_both_sources_and_a_model_without_json(exported, ckpt, tmp_path):
    with pytest.raises(FERError, match=r"pass either ckpt_path=<ckpt> or model=<model\.onnx>, not both"):
        _predict(tmp_path, f"ckpt_path={ckpt}", model=exported / "model.onnx")
    lone = tmp_path / "lone" / "model.onnx"
    lone.parent.mkdir()
    lone.write_bytes((exported / "model.onnx").read_bytes())
    with pytest.raises(FERError, match=r"model=.*model.onnx: no model.json beside it; export with"):
        _predict(tmp_path, f"model={lone}", visible="a.png", infrared="b.png")


def test_visible_export_parity(tmp_path_factory, data_dir, tmp_path):
    ckpt = tiny_run(tmp_path_factory, data_dir, "visible") / "checkpoints" / "last.ckpt"
    meta = export_checkpoint(compose_app("export", [f"ckpt_path={ckpt}"], tmp_path))
    assert meta["graphs"] == {"visible": "model.onnx"} and meta["fusion"] is None
    assert meta["parity"]["max_abs_diff"] <= 1e-4
    samples, _ = collect_inputs(data_dir / "synthetic" / "visible", ("visible",))
    a = _predict(tmp_path / "a", f"ckpt_path={ckpt}", visible=samples[0]["visible"])
    b = _predict(tmp_path / "b", f"model={tmp_path / 'model.onnx'}", visible=samples[0]["visible"])
    assert_same_prediction(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_mode_traces_with_a_free_batch_size(fusion):
    """Each mode's graph (and, for late/gated, each one-camera graph) matches PyTorch at batch sizes other than the
    traced one."""
    torch.manual_seed(0)
    model = FusionNet(
        5,
        {"name": "resnet18", "attention": "gate", "weights": None},
        {},
        fusion=fusion,
        aux_heads=fusion == "gated",
        late_combine="learned",
    ).eval()
    stats = {m: ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]) for m in ("visible", "infrared")}
    input_sets = [("visible", "infrared")] + ([("visible",), ("infrared",)] if model.supports_missing else [])
    for inputs in input_sets:
        graph = OnnxGraph(model, stats, inputs).eval()
        example = tuple(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8) for _ in inputs)
        session = ort.InferenceSession(export_module.trace(graph, example, 17, fusion))
        for n in (1, 5):
            images = {m: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8) for m in inputs}
            with torch.no_grad():
                reference = graph(*images.values()).double().softmax(1).numpy()
            logits = session.run(["logits"], {m: x.numpy() for m, x in images.items()})[0]
            assert np.abs(softmax(logits) - reference).max() < 1e-4, (fusion, inputs, n)
