"""Checkpoints checked before use and found with their run's config.

Every checkpoint in the project is read by :func:`fer_lightning.io.read_checkpoint`, with
``torch.load(weights_only=True)``: a pickle that would build arbitrary objects (``__reduce__`` calling
``os.system``) is refused before anything in it runs. Lightning's own checkpoints hold only tensors, numbers,
strings and plain containers, so nothing needs allow-listing. The run's config beside it is checked by
:mod:`fer_lightning.runs.trust` before anything is built from it, and the model is rebuilt from the checkpoint's
own ``hyper_parameters``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fer_lightning.errors import FERError
from fer_lightning.io import read_checkpoint
from fer_lightning.runs.trust import untrusted

RUN_CONFIG = Path(".hydra") / "config.yaml"
# The last checkpoint a run wrote (Lightning's ``save_last``), which ``ckpt_path=last`` resumes.
LAST = Path("checkpoints") / "last.ckpt"


def checkpoint_modality(checkpoint: dict[str, Any]) -> str:
    """``visible``, ``infrared`` or ``fusion``, from the branches the weights hold."""
    branches = {k.split(".")[1] for k in checkpoint["state_dict"] if k.startswith("backbones.")}
    if branches == {"visible", "infrared"}:
        return "fusion"
    return next(iter(branches), "unknown")


def check_resumable(path: str | Path, modality: str) -> dict[str, Any]:
    """The checkpoint at ``path``; refuses (one line) a file that is not a safe checkpoint of a ``modality``
    model, before Lightning reads it."""
    checkpoint = read_checkpoint(path)
    if "optimizer_states" not in checkpoint:
        raise FERError(
            f"ckpt_path={path}: holds weights only (a best-validation checkpoint), not the training state a "
            "resume needs; resume from the run's last.ckpt (ckpt_path=last with hydra.run.dir=<run dir>)"
        )
    found = checkpoint_modality(checkpoint)
    if found != modality:
        raise FERError(
            f"ckpt_path={path}: a {found} checkpoint cannot resume a modality={modality} run; "
            f"pass modality={found}, or a {modality} checkpoint"
        )
    return checkpoint


@dataclass
class RunCheckpoint:
    """A checkpoint file with the config of the run that wrote it."""

    path: Path
    checkpoint: dict
    run_dir: Path
    config: DictConfig

    @property
    def classes(self) -> list[str]:
        return list(self.checkpoint.get("hyper_parameters", {}).get("class_names") or [])

    @property
    def modality(self) -> str:
        return str(self.config.modality)

    @property
    def hyper_parameters(self) -> dict:
        """The model's constructor arguments, as Lightning's ``save_hyperparameters`` stored them."""
        return dict(self.checkpoint.get("hyper_parameters") or {})

    @property
    def datamodule_state(self) -> dict | None:
        """What the datamodule's ``state_dict`` saved: Lightning stores it under the class's qualified name."""
        target = str(OmegaConf.select(self.config, "dataset._target_", default="") or "")
        return self.checkpoint.get(target.rsplit(".", 1)[-1])


def load_run_checkpoint(ckpt_path: str | Path | None) -> RunCheckpoint:
    """Reads a checkpoint and its run's ``.hydra/config.yaml``; every failure is one FERError line."""
    if ckpt_path in (None, "", "???"):
        raise FERError("ckpt_path is not set; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    path = Path(str(ckpt_path)).expanduser()
    checkpoint = read_checkpoint(path)
    for run_dir in (path.parent.parent, path.parent):
        config_path = run_dir / RUN_CONFIG
        if config_path.is_file():
            break
    else:
        raise FERError(
            f"ckpt_path={path}: no run config ({path.parent.parent / RUN_CONFIG}); use a checkpoint "
            "that sits in its run dir's checkpoints/ folder"
        )
    try:
        config = OmegaConf.load(config_path)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise FERError(f"{config_path}: unreadable run config ({type(exc).__name__}); restore it from the run") from exc
    check_run(path, checkpoint, config_path, config)
    return RunCheckpoint(path=path, checkpoint=checkpoint, run_dir=run_dir, config=config)


def check_run(path: Path, checkpoint: dict, config_path: Path, config: Any) -> None:
    """Refuses, before anything is built, a run config that could instantiate more than fer-lightning's own
    components, model settings that are not plain values, and a config whose modality is not the weights'."""
    if not isinstance(config, DictConfig):
        raise FERError(f"{config_path}: not a run config (no key: value mapping); restore it from the run")
    problem = untrusted(OmegaConf.to_container(config, resolve=False))
    if problem:
        raise FERError(f"{config_path}: {problem}; restore the run's config")
    hparams = checkpoint.get("hyper_parameters")
    problem = untrusted(hparams, "hyper_parameters") if isinstance(hparams, dict) else "no hyper_parameters"
    if problem:
        raise FERError(f"ckpt_path={path}: {problem}; use a checkpoint written by python -m fer_lightning.train")
    found = checkpoint_modality(checkpoint)
    if str(config.get("modality")) != found:
        raise FERError(
            f"{config_path}: modality={config.get('modality')}, but {path.name} holds a {found} model; "
            "restore the run's config"
        )
