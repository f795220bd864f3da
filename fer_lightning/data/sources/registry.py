"""Which function produces each fetched dataset's images: one line per dataset in :data:`SOURCES` (or one
:func:`register_source` call), beside its ``conf/dataset/<name>.yaml``. ``docs/contributing.md#add-a-dataset``
walks through adding one."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fer_lightning.data.extract import DEFAULT_CAPS, SizeCaps
from fer_lightning.data.sources import Sources
from fer_lightning.errors import FERError


@dataclass(frozen=True)
class SourceRequest:
    """What a dataset's source function gets: where its raw files live, where it may extract them, and its
    config's fetch settings (``dataset.download``, ``verify``, ``base_url``, ``retries``, ``extract``)."""

    name: str
    raw_dir: Path  # <data_dir>/raw/<name>/
    extract_root: Path  # <data_dir>/<name>/extracted/
    download: bool = True
    verify: bool = True
    base_url: str | None = None
    retries: int = 3
    caps: SizeCaps = DEFAULT_CAPS


SourceFunction = Callable[[SourceRequest], Sources]

# dataset name -> "module:function" returning its images; imported only when that dataset is prepared
SOURCES: dict[str, str | SourceFunction] = {
    "viri": "fer_lightning.data.sources.published:study_archives",
    "nvie": "fer_lightning.data.sources.published:study_archives",
}


def register_source(name: str, source: str | SourceFunction) -> None:
    """Registers ``source`` (a function, or ``"module:function"``) as dataset ``name``'s; a name is taken once."""
    if name in SOURCES:
        raise ValueError(f"dataset {name!r} already has a source: {SOURCES[name]}")
    SOURCES[name] = source


def source_of(name: str) -> SourceFunction:
    source = SOURCES.get(name)
    if source is None:
        raise FERError(
            f"dataset.name={name}: no source registered for it; use one of {', '.join(sorted(SOURCES))}, or register "
            "one (docs/contributing.md#add-a-dataset)"
        )
    if isinstance(source, str):
        module, function = source.split(":")
        source = getattr(importlib.import_module(module), function)
    return source
