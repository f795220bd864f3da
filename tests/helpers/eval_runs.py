"""A tiny trained run shared by the evaluation tests (evaluate, predict, explain, notebooks).

Training is the slow part, so the first test that asks trains once and every later test module of the session
reuses the run dir (a module-level cache, since the fixtures live in several test files).
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import CONF, TINY, compose_cfg

_RUNS: dict[tuple[str, str], Path] = {}


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """What ``@hydra.main`` writes as ``.hydra/config.yaml`` (in-process train() calls do not write it)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def tiny_run(tmp_path_factory, data_dir: Path, modality: str = "fusion", *extra: str) -> Path:
    """The run dir of a one-epoch tiny synthetic run (results.json, checkpoints/, .hydra/config.yaml); ``extra``
    overrides on top (e.g. ``model.fusion=interleave``)."""
    from fer_lightning.runs import train_and_test

    key = (str(tmp_path_factory.getbasetemp()), modality, *extra)
    if key not in _RUNS:
        run_dir = tmp_path_factory.mktemp(f"tiny_{modality}_run")
        overrides = [*TINY, "logger=none", "trainer.max_epochs=1", f"modality={modality}", *extra]
        cfg = compose_cfg(overrides, run_dir, data_dir)
        train_and_test(cfg)
        save_run_config(cfg, run_dir)
        _RUNS[key] = run_dir
    return _RUNS[key]


def compose_app(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Composes an entry point's config (eval, predict, explain) as its command line would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def isolated_checkpoint(run_dir: Path, tmp: Path, name: str = "last.ckpt") -> Path:
    """``run_dir``'s checkpoint seen from a run dir of its own (the config copied, the weights linked), so a test that
    writes beside the checkpoint (evaluate calibrate=temperature) leaves the shared run as other tests expect it."""
    import shutil

    shutil.copytree(run_dir / ".hydra", tmp / ".hydra")
    (tmp / "checkpoints").mkdir()
    (tmp / "checkpoints" / name).symlink_to(run_dir / "checkpoints" / name)
    return tmp / "checkpoints" / name
