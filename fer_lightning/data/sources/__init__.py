"""Where a dataset's images come from, before they are checked and paired: the study's published archives
(:mod:`.published`) or a user's folder (:mod:`.folder`). The synthetic generator is :mod:`fer_lightning.data.synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sources:
    """What a dataset offers before checking: image files per modality and class, and files set aside.

    ``base`` is the folder sample ids are relative to; ``rejected`` holds ``(file, reason)`` rows for files
    that never became candidates (archive junk, files outside class folders).
    """

    images: dict[str, dict[str, list[Path]]]
    base: Path
    rejected: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    description: str = ""
