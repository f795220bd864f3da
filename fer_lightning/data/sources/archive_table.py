"""The archives the study published: their names, git blob ids and URLs.

The archives are pinned to one commit of the study's repository and identified by their git blob
id, ``sha1(b"blob <size>\\0" + bytes)``, which is what ``git hash-object`` prints; anyone can check a
file by hand against the table below.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from fer_lightning.errors import FERError

SOURCE_COMMIT = "d5f655d9b88c319c87514fa929a025361c35259b"
BASE_URL = "https://github.com/naseemmuhammadtahir/raw-data/raw/{commit}/{name}"

# name, git blob id: exactly as published at SOURCE_COMMIT.
_TABLE = """
VIRI-Angry-Vis.zip     f91542fdb1f3506d869947cb817d3c64523c5cb8
VIRI-Angry-Ir.zip      f265496b2285576475a6cd55c1304447e01d69e4
VIRI-Happy-Vis.zip     d0653c28f88a2d86283aa9791468df5cc51c4b1e
VIRI-Happy-Ir.zip      398f1355ef7667894b56c083eba4bd4ca92466cc
VIRI-Neutral-Vis.zip   a8ce692f1f59fb270f4299e13207e5601c5c334b
VIRI-Neutral-Ir.zip    c0d848366b0b5ba844981bdf3c9ebf678a7d6248
VIRI-Sad-Vis.zip       34eac837e42f29f794ac2dade9ddf232d2e3e572
VIRI-Sad-Ir.zip        d39e54a970c9b72cfbe99667f02bceb3cbd22864
VIRI-Surprise-Vis.zip  c4f6f7215971c277259a0567d65ad718c6b51bf4
VIRI-Surprise-Ir.zip   c0fdea04ec60b57eb7ec5c53fd964ea03d62a266
NVIE-disgust1-Vis.zip  cc6f8d54c706e23f919e9000650418808016275b
NVIE-disgust2-Vis.zip  0c910f4ca1027005b01b966fbb75af5b4a26772b
NVIE-disgust-Ir.zip    bbd3b4cda449ce3b06ff388ef911899e42772a67
NVIE-fear-Vis.zip      fbb72f422f7deafc4d7d3a5d1f4684dfe09c240c
NVIE-fear-Ir.zip       701d2f997cbf92997f950973bd50707f8efea5d5
NVIE-happy1-Vis.7z     cc86dfda85f88e92948fd8fe0055e52204f92280
NVIE-happy2-Vis.zip    3e7a22d40d70d61e77e09f3958f9235dbd1e2c2b
NVIE-happy-Ir.zip      2595a6d2473a7eb3d5017fa108b76b00661778c7
"""

_NAME_RE = re.compile(
    r"^(?P<dataset>VIRI|NVIE)-(?P<label>[A-Za-z]+?)(?P<part>\d+)?-(?P<modality>Vis|Ir)\.(?:zip|7z)$",
    re.IGNORECASE,
)
_MODALITIES = {"vis": "visible", "ir": "infrared"}


@dataclass(frozen=True)
class ArchiveSpec:
    """One published archive. ``label`` keeps the case of the published name (``Angry``, ``fear``)."""

    name: str
    blob_id: str
    label: str
    modality: str  # "visible" or "infrared"
    part: int | None = None  # 1, 2 for classes split over several archives

    @property
    def dataset(self) -> str:
        return parse_archive_name(self.name)[0]

    @property
    def folder_name(self) -> str:
        """The name without its archive extension, used as the extraction folder."""
        return self.name.rsplit(".", 1)[0]


def parse_archive_name(name: str) -> tuple[str, str, str, int | None]:
    """Split a published archive name into ``(dataset, label, modality, part)``.

    ``NVIE-happy1-Vis.7z`` -> ``("nvie", "happy", "visible", 1)``;
    ``VIRI-Angry-Ir.zip`` -> ``("viri", "Angry", "infrared", None)``.
    """
    match = _NAME_RE.match(name)
    if match is None:
        raise FERError(f"{name}: not a published archive name; expected <VIRI|NVIE>-<class>[part]-<Vis|Ir>.<zip|7z>")
    part = match["part"]
    return (
        match["dataset"].lower(),
        match["label"],
        _MODALITIES[match["modality"].lower()],
        int(part) if part else None,
    )


def _build_table(text: str) -> dict[str, list[ArchiveSpec]]:
    table: dict[str, list[ArchiveSpec]] = {}
    for line in text.strip().splitlines():
        name, blob_id = line.split()
        dataset, label, modality, part = parse_archive_name(name)
        table.setdefault(dataset, []).append(ArchiveSpec(name, blob_id, label, modality, part))
    return table


PUBLISHED_ARCHIVES: dict[str, list[ArchiveSpec]] = _build_table(_TABLE)


def archive_url(name: str, base_url: str | None = None) -> str:
    """URL of archive ``name``; ``base_url`` is a prefix, or a template with ``{name}`` (and ``{commit}``)."""
    quoted = urllib.parse.quote(name)
    template = BASE_URL if base_url is None else base_url
    if "{name}" in template:
        return template.format(commit=SOURCE_COMMIT, name=quoted)
    return template.rstrip("/") + "/" + quoted


def specs_for(dataset: str) -> list[ArchiveSpec]:
    specs = PUBLISHED_ARCHIVES.get(dataset.lower())
    if specs is None:
        raise FERError(f"dataset {dataset!r} has no published archives; choose one of {', '.join(PUBLISHED_ARCHIVES)}")
    return specs
