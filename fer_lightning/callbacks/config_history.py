"""A record of the config each start of a run used (a Hydra callback)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from fer_lightning.io import atomic_write_text

log = logging.getLogger(__name__)

def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


class RunConfigHistory(HydraCallback):
    """Keeps the ``.hydra/`` files of earlier starts of a run dir before Hydra overwrites them.

    Resuming (``hydra.run.dir=<dir> ckpt_path=last``) makes Hydra write the new start's config over
    ``<dir>/.hydra/``; the previous files move to ``<dir>/.hydra/history/<n>/`` and, on a resume, every key
    whose value changed is logged (a resume must repeat the first start's overrides, or load them with
    ``--config-path <dir>/.hydra --config-name config``).
    """

    IGNORED = ("ckpt_path",)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.output_subdir is None:  # this start writes no .hydra/ (a DDP rank other than 0)
            return
        run_dir = Path(str(config.hydra.run.dir))
        saved = run_dir / str(config.hydra.output_subdir)
        if not (saved / "config.yaml").is_file():
            return
        history = saved / "history"
        n = len(list(history.glob("*"))) if history.is_dir() else 0
        dest = history / f"{n:03d}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            if (saved / name).is_file():
                shutil.copy2(saved / name, dest / name)
        atomic_write_text(dest / "moved_at.txt", time.strftime("%Y-%m-%d %H:%M:%S\n"))
        if config.get("ckpt_path") is None:
            log.warning("%s already holds a run; its config is kept in %s", run_dir, dest)
            return
        old = _flatten(yaml.safe_load((saved / "config.yaml").read_text()) or {})
        task = OmegaConf.to_container(config, resolve=False)
        task.pop("hydra", None)
        new = _flatten(task)
        changed = sorted(
            k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and not k.startswith(self.IGNORED)
        )
        if changed:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
            more = f" (+{len(changed) - 8} more)" if len(changed) > 8 else ""
            log.warning(
                "resuming %s with a config that differs from its previous start: %s%s (previous config: %s)",
                run_dir,
                shown,
                more,
                dest / "config.yaml",
            )
