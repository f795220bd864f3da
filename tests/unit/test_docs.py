"""Measurements live in docs/benchmarks.md, not in comments, and its generated tables match their result files."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from tests.conftest import REPO
from tests.helpers.tools import results_table

BENCHMARKS = REPO / "docs" / "benchmarks.md"
# what a measured result looks like in a comment: a spread, an accuracy, an interval, a test n, a date, a rate
MEASUREMENT = {
    "a spread": r"±\s*\d|\+-\s*\d",
    "an accuracy": r"\b0\.\d{3}\b",
    "an interval": r"\[[+−-]?\d*\.\d+, ?[+−-]?\d*\.\d+\]",
    "a test n": r"\bn ?= ?\d",
    "a date": r"\b20\d\d-\d\d-\d\d\b",
    "a rate": r"(?i)\b(img|pairs)/s\b",
    "an issue number": r"(?i)\bissues? #?\d",
}


def comments(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    if path.suffix == ".py":
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        return [(t.start[0], t.string) for t in tokens if t.type == tokenize.COMMENT]
    return [(i, line[line.index("#") :]) for i, line in enumerate(text.splitlines(), 1) if "#" in line]


def hits(path: Path) -> list[tuple[int, str, str]]:
    """``(line, what, comment)`` for every comment of ``path`` that looks like a measurement."""
    return [
        (line, what, comment.strip())
        for line, comment in comments(path)
        for what, pattern in MEASUREMENT.items()
        if re.search(pattern, comment)
    ]


def test_config_and_code_comments_hold_no_measurements():
    paths = sorted((REPO / "conf").rglob("*.yaml")) + sorted((REPO / "fer_lightning").rglob("*.py"))
    found = [f"{p.relative_to(REPO)}:{line}: {what}: {comment}" for p in paths for line, what, comment in hits(p)]
    assert not found, "measured numbers belong in docs/benchmarks.md; say why and link there:\n" + "\n".join(found)


def kinds(path: Path) -> set[str]:
    return {what for _, what, _ in hits(path)}


def test_the_comment_check_finds_a_measurement(tmp_path):
    config = tmp_path / "fusion.yaml"
    config.write_text("# on synthetic data 0.3 lifted accuracy from 0.853 to 0.889, n=225\nmodality_dropout: 0.3\n")
    module = tmp_path / "m.py"
    module.write_text("x = 0.853  # a value\n# measured 2026-12-02: 0.944 ± 0.008 [0.91, 0.97]\n")
    assert kinds(config) == {"an accuracy", "a test n"}
    assert kinds(module) == {"a date", "a spread", "an accuracy", "an interval"}


def test_generated_tables_match_their_result_files():
    text = BENCHMARKS.read_text()
    assert results_table.BLOCK.search(text), "docs/benchmarks.md has no generated results block"
    assert results_table.render(text) == text, "run: python tools/results_table.py docs/benchmarks.md"
