"""The README is a page of tasks: short, without measurements or build history, and its commands work as written.

The convention (docs/contributing.md): a fenced block tagged ``bash cheap`` is run line by line, exactly as
written, in an empty folder (so ./data and ./logs land there). Every other ``python -m fer_lightning.train``
line without a ``<placeholder>`` is composed with Hydra, so a renamed key, group or option fails here; the long
runs themselves are not started.
"""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import CONF, REPO
from tests.helpers.readme_blocks import README, cheap_lines, commands, readme_blocks

MAX_LINES = 250
# what a measurement or the history of one looks like: dates, issue numbers, sample counts, accuracies, rates
NOT_IN_README = {
    "a date": r"\b20\d\d-\d\d-\d\d\b",
    "an issue number": r"(?i)\bissues? #?\d",
    "a 'measured' note": r"(?i)\bmeasured\b",
    "a 'since <year>' note": r"(?i)\bsince 20\d\d",
    "a test n": r"\bn ?= ?\d",
    "an accuracy": r"\b0\.\d{2,}\b",
    "a plus-minus spread": r"±\s*\d",
    "a speed": r"(?i)\b(img|images|pairs)/s\b",
}


def train_lines() -> list[str]:
    """``python -m fer_lightning.train`` lines outside the cheap blocks, without placeholders."""
    return [
        line
        for info, body in readme_blocks()
        if info.split() == ["bash"]
        for line in commands(body)
        if line.startswith("python -m fer_lightning.train ") and "<" not in line
    ]


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; keep it under {MAX_LINES}, depth goes to docs/"


@pytest.mark.parametrize("what", NOT_IN_README)
def test_readme_holds_no_measurement_or_build_history(what):
    found = [line for line in README.read_text().splitlines() if re.search(NOT_IN_README[what], line)]
    assert not found, f"README.md holds {what} (measurements go to docs/benchmarks.md): {found}"


def test_the_checks_catch_what_they_are_for():
    lines = [
        "Measured on 2026-11-28 on the 2-core CPU (issue 14): 0.944 ± 0.008 (n=225), 13.3 img/s.",
        "Since 2026-12-02 its fusion mode is gated.",
    ]
    caught = {what for what, pattern in NOT_IN_README.items() for line in lines if re.search(pattern, line)}
    assert caught == set(NOT_IN_README)


def test_the_install_block_is_what_ci_runs():
    first = next(body for info, body in readme_blocks() if info.startswith("bash"))
    install, test = commands(first)
    assert install == (
        "python3 -m venv .venv && . .venv/bin/activate && "
        'pip install -e ".[dev,export]" && python -m fer_lightning.train'
    )
    assert test == "python -m pytest"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert 'pip install -e ".[dev,export]"' in ci and "python -m pytest" in ci


def test_there_are_cheap_and_composed_commands():
    assert any("debug=fast" in line for line in cheap_lines())
    assert len(train_lines()) >= 10


@pytest.mark.parametrize("line", train_lines())
def test_train_commands_compose(line):
    args = shlex.split(line, comments=True)[3:]
    overrides = []
    for ov in OverridesParser.create().parse_overrides([a for a in args if a != "-m"]):
        value = ov.sweep_string_iterator().__next__() if ov.is_sweep_override() else ov.get_value_element_as_str()
        overrides.append(f"{ov.get_key_element()}={value}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        compose(config_name="train", overrides=overrides, return_hydra_config=True)
