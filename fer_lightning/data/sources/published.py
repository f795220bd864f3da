"""The archives the study published: their table, and fetching, verifying and extracting them into sources.

The archives are pinned to one commit of the study's repository and identified by their git blob
id, ``sha1(b"blob <size>\\0" + bytes)``, which is what ``git hash-object`` prints; anyone can check a
file by hand against the table below.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_lightning.data.download import DownloadError, download
from fer_lightning.data.extract import DEFAULT_CAPS, ExtractResult, SizeCaps, safe_extract
from fer_lightning.data.pairing import normalise_stem
from fer_lightning.data.sources import Sources
from fer_lightning.data.sources.registry import SourceRequest
from fer_lightning.errors import FERError, one_line
from fer_lightning.io import atomic_write_text, git_blob_sha1

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# The archive table

SOURCE_COMMIT = "d5f655d9b88c319c87514fa929a025361c35259b"
BASE_URL = "https://github.com/naseemmuhammadtahir/raw-data/raw/{commit}/{name}"

# Config keys named in messages, so the user knows what to change.
VERIFY_KEY = "dataset.verify"
DOWNLOAD_KEY = "dataset.download"

VERIFIED_CACHE_NAME = ".verified.json"
EXTRACTED = "extracted"  # the folder of the prepared dataset the archives are extracted into

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


def _specs_for(dataset: str) -> list[ArchiveSpec]:
    specs = PUBLISHED_ARCHIVES.get(dataset.lower())
    if specs is None:
        raise FERError(f"dataset {dataset!r} has no published archives; choose one of {', '.join(PUBLISHED_ARCHIVES)}")
    return specs


# --------------------------------------------------------------------------------------------------
# Verifying and fetching a dataset's archives


class _BlobCache:
    """``.verified.json``: name -> size, mtime_ns, blob, so unchanged archives are hashed once."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = self._load()
        self.dirty = False

    def _load(self) -> dict[str, Any]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def blob(self, file: Path) -> str:
        st = file.stat()
        entry = self.entries.get(file.name)
        if (
            isinstance(entry, dict)
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
            and isinstance(entry.get("blob"), str)
        ):
            return entry["blob"]
        blob = git_blob_sha1(file)
        self.record(file, blob)
        return blob

    def record(self, file: Path, blob: str) -> None:
        st = file.stat()
        self.entries[file.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blob": blob}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            atomic_write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only data folder only costs re-hashing next time
            logger.debug("cannot write %s: %s", self.path, exc)
        self.dirty = False


def ensure_archives(
    dataset: str,
    raw_dir: str | Path,
    *,
    download: bool,
    verify: bool,
    base_url: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60,
) -> list[tuple[ArchiveSpec, Path]]:
    """Make every archive of ``dataset`` available in ``raw_dir``, in :data:`PUBLISHED_ARCHIVES` order.

    Local files are checked against their git blob id (cached in ``raw_dir/.verified.json`` by size
    and mtime, so a second run does not re-hash). A mismatch is an error when ``verify`` is true and
    a warning otherwise. Missing files are downloaded when ``download`` is true (from ``base_url``,
    see :func:`archive_url`); the network is never touched when it is false.

    Raises:
        FERError: one message listing every missing file with its URL, or every mismatching file.
    """
    specs = _specs_for(dataset)
    raw_dir = Path(raw_dir)
    cache = _BlobCache(raw_dir / VERIFIED_CACHE_NAME)
    present = [s for s in specs if (raw_dir / s.name).is_file()]
    missing = [s for s in specs if not (raw_dir / s.name).is_file()]
    try:
        _check_blobs(present, raw_dir, cache, verify=verify)
        if missing and not download:
            raise FERError(_missing_message(dataset, missing, raw_dir, base_url, reason=None))
        for index, spec in enumerate(missing):
            dest = raw_dir / spec.name
            try:
                _fetch_one(
                    spec,
                    dest,
                    cache,
                    verify=verify,
                    base_url=base_url,
                    retries=retries,
                    backoff=backoff,
                    timeout=timeout,
                )
            except DownloadError as exc:
                # Stop at the first failure: when the network is down, each further file would
                # only spend its own retries on the same outcome.
                raise FERError(
                    _missing_message(dataset, missing[index:], raw_dir, base_url, reason=exc.reason)
                ) from exc
    finally:
        cache.save()
    return [(spec, raw_dir / spec.name) for spec in specs]


def _fetch_one(
    spec: ArchiveSpec,
    dest: Path,
    cache: _BlobCache,
    *,
    verify: bool,
    base_url: str | None,
    retries: int,
    backoff: float,
    timeout: float,
) -> None:
    url = archive_url(spec.name, base_url)
    logger.info("downloading %s", url)
    download(
        url,
        dest,
        expected_blob=spec.blob_id if verify else None,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
    )
    if verify:
        cache.record(dest, spec.blob_id)
    else:
        _check_blobs([spec], dest.parent, cache, verify=False)


def _check_blobs(specs: Iterable[ArchiveSpec], raw_dir: Path, cache: _BlobCache, *, verify: bool) -> None:
    mismatches = []
    for spec in specs:
        path = raw_dir / spec.name
        actual = cache.blob(path)
        if actual != spec.blob_id:
            mismatches.append((path, spec.blob_id, actual))
    if not mismatches:
        return
    if verify:
        if len(mismatches) == 1:
            path, expected, actual = mismatches[0]
            raise FERError(
                f"{path}: git blob id {actual} does not match expected {expected}; delete the file to "
                f"download it again, or set {VERIFY_KEY}=false to use it anyway"
            )
        listing = ", ".join(f"{p.name} (expected {e}, actual {a})" for p, e, a in mismatches)
        raise FERError(
            f"{len(mismatches)} archives in {raw_dir} do not match their git blob ids: {listing}; delete "
            f"them to download them again, or set {VERIFY_KEY}=false to use them anyway"
        )
    for path, expected, actual in mismatches:
        warnings.warn(
            f"{path}: git blob id {actual} does not match expected {expected}; "
            f"using it anyway because {VERIFY_KEY}=false",
            stacklevel=3,
        )


def _missing_message(
    dataset: str, missing: Sequence[ArchiveSpec], raw_dir: Path, base_url: str | None, reason: str | None
) -> str:
    listing = ", ".join(f"{s.name} ({archive_url(s.name, base_url)})" for s in missing)
    count = f"{len(missing)} {dataset} archive{'s' if len(missing) > 1 else ''}"
    if reason is None:
        return (
            f"{count} missing from {raw_dir}: {listing}; put them in {raw_dir}, "
            f"or set {DOWNLOAD_KEY}=true to download them"
        )
    return (
        f"{count} missing from {raw_dir} and could not be downloaded ({one_line(reason)}): {listing}; "
        f"download them into {raw_dir} by hand and rerun"
    )


# --------------------------------------------------------------------------------------------------
# Extracting them into sources


def extract_all(
    archives: Iterable[tuple[ArchiveSpec, Path]], extract_root: str | Path, caps: SizeCaps = DEFAULT_CAPS
) -> list[tuple[ArchiveSpec, ExtractResult]]:
    """:func:`safe_extract` each archive into ``extract_root/<archive name without extension>``.

    Each archive's blob id comes from the ``.verified.json`` beside it (which :func:`ensure_archives` just wrote),
    so an archive is not hashed again to be extracted, nor to find its earlier extraction current.
    """
    root = Path(extract_root)
    extracted = []
    for spec, path in archives:
        blob = _BlobCache(path.parent / VERIFIED_CACHE_NAME).blob(path)
        extracted.append((spec, safe_extract(path, root / spec.folder_name, blob_id=blob, caps=caps)))
    return extracted


def collect_images(
    extracted: Iterable[tuple[ArchiveSpec, ExtractResult]],
) -> dict[str, dict[str, list[Path]]]:
    """``{modality: {label: [absolute image paths]}}``, merging the parts of split classes."""
    collected: dict[str, dict[str, list[Path]]] = {"visible": {}, "infrared": {}}
    for spec, result in extracted:
        collected.setdefault(spec.modality, {}).setdefault(spec.label, []).extend(result.image_paths)
    return collected


def published_sources(
    name: str,
    raw_dir: Path,
    extract_root: Path,
    *,
    download: bool,
    verify: bool,
    base_url: str | None = None,
    retries: int = 3,
    caps: SizeCaps = DEFAULT_CAPS,
) -> Sources:
    """The images of dataset ``name``'s archives in ``raw_dir`` (fetched when missing and ``download``), extracted
    under ``extract_root``; labels come from the archive names."""
    archives = ensure_archives(name, raw_dir, download=download, verify=verify, base_url=base_url, retries=retries)
    extracted = extract_all(archives, extract_root, caps)
    rejected = [
        (f"{result.archive.name}/{entry}", reason) for _, result in extracted for entry, reason in result.skipped
    ]
    return Sources(
        images=collect_images(extracted),
        base=extract_root,
        rejected=rejected,
        warnings=_cross_check_labels(name, extracted),
        description=f"{len(extracted)} archives",
    )


def study_archives(request: SourceRequest) -> Sources:
    """viri's and nvie's source (:data:`fer_lightning.data.sources.registry.SOURCES`): the study's archives."""
    return published_sources(
        request.name,
        request.raw_dir,
        request.extract_root,
        download=request.download,
        verify=request.verify,
        base_url=request.base_url,
        retries=request.retries,
        caps=request.caps,
    )


def _cross_check_labels(name: str, extracted: list[tuple[ArchiveSpec, ExtractResult]]) -> list[str]:
    """Class-named folders inside an archive must agree with the class in the archive's name."""
    classes = {s.label.casefold(): s.label for s in PUBLISHED_ARCHIVES.get(name, ())}
    found = []
    for spec, result in extracted:
        disagree: Counter[str] = Counter()
        for image in result.images:
            for folder in image.parts[:-1]:
                other = classes.get(normalise_stem(folder))
                if other is not None and other != spec.label:
                    disagree[folder] += 1
                    break
        for folder, n in disagree.items():
            found.append(
                f"{spec.name}: {n} image(s) are in a folder named {folder!r}, not {spec.label!r} as the "
                f"archive name says; they are labelled {spec.label!r}"
            )
    return found
