"""The study's published archives as a dataset's sources: fetched and verified (:mod:`.archive_fetch`, from the
table in :mod:`.archive_table`), extracted, and their images labelled by the archive names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from fer_lightning.data.extract import DEFAULT_CAPS, ExtractResult, SizeCaps, safe_extract
from fer_lightning.data.pairing import normalise_stem
from fer_lightning.data.sources import Sources
from fer_lightning.data.sources.archive_fetch import VERIFIED_CACHE_NAME, BlobCache, ensure_archives
from fer_lightning.data.sources.archive_table import PUBLISHED_ARCHIVES, ArchiveSpec
from fer_lightning.data.sources.registry import SourceRequest

EXTRACTED = "extracted"  # the folder of the prepared dataset the archives are extracted into


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
        blob = BlobCache(path.parent / VERIFIED_CACHE_NAME).blob(path)
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
