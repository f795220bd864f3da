"""AtomicModelCheckpoint's tie rule, on scripted validation scores."""

from __future__ import annotations

import re

import lightning as L
import pytest

from fer_lightning.callbacks.checkpoint import AtomicModelCheckpoint
from fer_lightning.errors import FERError
from tests.helpers.scripted import ACCURACY, Scripted


def kept_epoch(tmp_path, tie_break: str) -> int:
    _, cb = fitted(tmp_path / tie_break, epochs=len(ACCURACY), tie_break=tie_break)
    # the superseded tie is deleted: one best file, the one recorded
    assert [p.name for p in (tmp_path / tie_break).glob("best-*.ckpt")] == [cb.best_model_path.rsplit("/", 1)[1]]
    assert float(cb.best_model_score) == pytest.approx(0.7)
    return int(re.search(r"best-epoch(\d+)", cb.best_model_path)[1])


@pytest.mark.parametrize(("tie_break", "epoch"), [("earlier", 1), ("later", 4), ("val_loss", 3)])
def test_tied_validation_accuracy_keeps_the_checkpoint_the_rule_names(tie_break, epoch, tmp_path):
    assert kept_epoch(tmp_path, tie_break) == epoch


def test_tie_values_survive_a_resume_and_a_bad_rule_is_named():
    cb = AtomicModelCheckpoint(monitor="val/accuracy", mode="max", tie_break="val_loss")
    cb.tie_values = {"/run/checkpoints/best-epoch003.ckpt": 0.75}
    restored = AtomicModelCheckpoint(monitor="val/accuracy", mode="max", tie_break="val_loss")
    restored.load_state_dict(cb.state_dict())
    assert restored.tie_values == cb.tie_values
    with pytest.raises(FERError, match=r"tie_break='newest'.*earlier, later, val_loss"):
        AtomicModelCheckpoint(tie_break="newest")


def test_an_unknown_test_checkpoint_names_the_key(tmp_path):
    with pytest.raises(FERError, match=r"callbacks\.model_checkpoint\.test_checkpoint='final': use one of best, last"):
        AtomicModelCheckpoint(dirpath=tmp_path, monitor="val/accuracy", mode="max", test_checkpoint="final")
    with pytest.raises(FERError, match=r"needs callbacks\.model_checkpoint\.save_last=true"):
        AtomicModelCheckpoint(dirpath=tmp_path, monitor="val/accuracy", test_checkpoint="last", save_last=False)


def fitted(dirpath, epochs: int = 2, **kwargs) -> tuple[L.Trainer, AtomicModelCheckpoint]:
    """Scripted epochs (two: the best-validation checkpoint is epoch 1's), and last.ckpt is written."""
    cb = AtomicModelCheckpoint(
        dirpath=dirpath,
        filename="best-epoch{epoch:03d}",
        monitor="val/accuracy",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
        **kwargs,
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        default_root_dir=dirpath,
    )
    trainer.fit(Scripted())
    return trainer, cb


@pytest.mark.parametrize(("test_checkpoint", "kept"), [("best", "best-epoch001.ckpt"), ("last", "last.ckpt")])
def test_keep_tested_deletes_only_the_checkpoint_the_run_did_not_test(test_checkpoint, kept, tmp_path):
    trainer, cb = fitted(tmp_path / "tested", keep="tested", test_checkpoint=test_checkpoint)
    assert sorted(p.name for p in (tmp_path / "tested").glob("*.ckpt")) == ["best-epoch001.ckpt", "last.ckpt"]
    tested = cb.best_model_path if test_checkpoint == "best" else cb.last_model_path
    removed = cb.keep_tested_only(trainer, tested)
    assert [p.name for p in (tmp_path / "tested").glob("*.ckpt")] == [kept] and len(removed) == 1
    trainer, cb = fitted(tmp_path / "all")  # keep=all, the default: nothing deleted
    assert cb.keep_tested_only(trainer, cb.best_model_path) == []
    assert sorted(p.name for p in (tmp_path / "all").glob("*.ckpt")) == ["best-epoch001.ckpt", "last.ckpt"]
    with pytest.raises(FERError, match=r"callbacks\.model_checkpoint\.keep='best': use one of all, tested"):
        AtomicModelCheckpoint(dirpath=tmp_path, monitor="val/accuracy", keep="best")


def test_the_private_lightning_methods_it_relies_on_are_unchanged():
    """AtomicModelCheckpoint overrides and calls private ModelCheckpoint methods: a Lightning release that renames or
    re-signs one must fail here (then adapt fer_lightning/callbacks/checkpoint.py and raise the pin in
    pyproject.toml)."""
    import inspect

    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer_lightning.callbacks.checkpoint import PRIVATE_MODEL_CHECKPOINT_API

    for name, params in PRIVATE_MODEL_CHECKPOINT_API.items():
        method = getattr(ModelCheckpoint, name, None)
        assert callable(method), f"lightning {L.__version__}: ModelCheckpoint.{name} is gone"
        assert tuple(inspect.signature(method).parameters) == params, f"lightning {L.__version__}: {name} changed"
    # every private ModelCheckpoint method the module touches is listed above
    source = inspect.getsource(AtomicModelCheckpoint)
    used = set(re.findall(r"(?:self|super\(\))\.(_[a-z]\w*)\(", source))
    inherited = {name for name in used if hasattr(ModelCheckpoint, name)}
    assert inherited == set(PRIVATE_MODEL_CHECKPOINT_API)


def test_the_installed_lightning_is_within_the_tested_pin():
    from packaging.requirements import Requirement

    from tests.conftest import REPO

    pinned = [line for line in (REPO / "pyproject.toml").read_text().splitlines() if '"lightning>=' in line]
    requirement = Requirement(pinned[0].strip().strip('",'))
    assert requirement.specifier.contains(L.__version__), f"lightning {L.__version__} is outside {requirement}"
    assert any(spec.operator in ("<=", "<") for spec in requirement.specifier), "lightning has no upper bound"
