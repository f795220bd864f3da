"""The README's fenced command blocks, and which of them are cheap enough to run as written."""

from __future__ import annotations

import re

from tests.conftest import REPO

README = REPO / "README.md"


FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(text: str) -> list[tuple[str, str]]:
    """``(info string, body)`` of every fenced block."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    """The shell lines of a block, continuation lines joined."""
    return [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def readme_blocks() -> list[tuple[str, str]]:
    return blocks(README.read_text())


def cheap_lines() -> list[str]:
    return [line for info, body in readme_blocks() if info.split() == ["bash", "cheap"] for line in commands(body)]
