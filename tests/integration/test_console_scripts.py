"""The console scripts (``fer-train``, ``fer-evaluate`` ...) run exactly what ``python -m fer_lightning.<command>``
runs: the same output, error lines and exit status."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

COMMANDS = ("train", "prepare", "evaluate", "predict", "explain", "robustness", "report", "compare", "bench")


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: name -> ``module:function`` (tomllib is Python 3.11+)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, flags=re.M))


def test_every_command_has_a_console_script_that_resolves_to_a_callable():
    scripts = console_scripts()
    assert {f"fer-{c}" for c in COMMANDS} <= set(scripts)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), f"{name} = {target}"
    for command in COMMANDS:
        assert scripts[f"fer-{command}"].startswith(f"fer_lightning.{command}:")


def wrapper(target: str) -> str:
    """The script pip writes for a ``[project.scripts]`` entry (distlib's template)."""
    module, _, function = target.partition(":")
    return (
        f"import re\nimport sys\nfrom {module} import {function}\nif __name__ == '__main__':\n"
        f"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit({function}())\n"
    )


def bad_arguments(command: str, tmp, run: str) -> list[str]:
    """Arguments each command refuses with one ``error:`` line (exit 2); a Hydra command writes in ``tmp / run``."""
    run_dir = f"hydra.run.dir={tmp / run}"
    return {
        "train": ["seed=abc", run_dir],
        "prepare": ["dataset=nope"],
        "report": [str(tmp / "no-such-dir")],
        "compare": [str(tmp / "a.csv"), str(tmp / "b.csv")],
        "bench": ["--steps", "0"],
    }.get(command, [f"ckpt_path={tmp / 'missing.ckpt'}", run_dir])


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_a_console_script_behaves_as_python_m(command, tmp_path):
    # from another folder: the package is found by import, the configs by their absolute path
    env = {**os.environ, "PYTHONPATH": str(REPO), "FER_LOG_DIR": str(tmp_path / "logs")}
    script = wrapper(console_scripts()[f"fer-{command}"])
    ran = {
        how: subprocess.run(
            [sys.executable, *head, *bad_arguments(command, tmp_path, how.replace(" ", ""))],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        for how, head in (("python -m", ["-m", f"fer_lightning.{command}"]), ("console", ["-c", script]))
    }
    module, console = ran["python -m"], ran["console"]
    assert module.returncode == console.returncode == 2, (module.stderr[-2000:], console.stderr[-2000:])
    assert console.stderr == module.stderr and console.stdout == module.stdout
    assert module.stderr.startswith("error: ") and module.stderr.count("\n") == 1, module.stderr
