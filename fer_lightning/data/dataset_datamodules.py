"""One LightningDataModule per dataset (``conf/dataset/<name>.yaml`` names it); the modality is a constructor
argument. They differ only in how ``build_dataset()`` produces the prepared manifest that
:class:`~fer_lightning.data.datamodule.ManifestDataModule` serves.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fer_lightning.data import synthetic
from fer_lightning.data.assemble import ImageOptions, build
from fer_lightning.data.datamodule import ManifestDataModule
from fer_lightning.data.extract import DEFAULT_CAPS, MAX_ARCHIVE_KEY, MAX_ENTRY_KEY, SizeCaps
from fer_lightning.data.sources.folder import folder_sources
from fer_lightning.data.sources.published import EXTRACTED
from fer_lightning.data.sources.registry import SourceRequest, source_of
from fer_lightning.errors import FERError
from fer_lightning.validation import Number, checked

__all__ = [
    "FolderDataModule",
    "ImageFilesDataModule",
    "ManifestDataModule",
    "NVIEDataModule",
    "PublishedDataModule",
    "SyntheticDataModule",
    "VIRIDataModule",
]

# Preparation's numbers: retries of a download, and the caps on what an archive may expand to (MB)
RULES = {
    "dataset.retries": Number(int, 0, lenient=True),
    MAX_ENTRY_KEY: Number(float, 1, lenient=True),
    MAX_ARCHIVE_KEY: Number(float, 1, lenient=True),
}


class SyntheticDataModule(ManifestDataModule):
    """Procedurally drawn visible + infrared faces (5 VIRI expressions); generated once, no download.

    Args:
        generator: arguments of :func:`fer_lightning.data.synthetic.generate`; changing them regenerates.
    """

    name = "synthetic"

    def __init__(self, generator: dict | None = None, **kwargs):
        kwargs.setdefault("classes", list(synthetic.CLASSES))
        super().__init__(**kwargs)
        self.generator = dict(generator or {})

    def build_dataset(self) -> None:
        synthetic.build_dataset(self.root, self.generator)


class ImageFilesDataModule(ManifestDataModule):
    """Image files on disk, checked and paired into a manifest by :func:`fer_lightning.data.assemble.build`.

    Args:
        pairing: ``auto`` (file stems, else sorted order where counts are equal, with a warning) or
            ``strict``.
        sixteen_bit / sixteen_bit_range: how 16-bit images become 8-bit: ``minmax`` per image, or ``fixed``
            (clipped to the range, comparable across images); they are converted once, at preparation.
    """

    def __init__(
        self,
        pairing: str = "auto",
        sixteen_bit: str = "minmax",
        sixteen_bit_range: tuple[float, float] = (0, 65535),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_options = ImageOptions(pairing, sixteen_bit, tuple(sixteen_bit_range))


class PublishedDataModule(ImageFilesDataModule):
    """A dataset prepared from files it fetches into ``<data_dir>/raw/<name>/``: the study's published archives
    (viri, nvie), or any dataset whose source function is registered under its name
    (:mod:`fer_lightning.data.sources.registry`); ``conf/dataset/<name>.yaml`` may name this class itself.

    Args:
        download: fetch missing archives (``dataset.download``); false never touches the network.
        verify: refuse archives whose git blob id differs (``dataset.verify``); false only warns.
        base_url: where archives are fetched from: a prefix, or a template with ``{name}`` and ``{commit}``;
            null is the study's repository at its pinned commit.
        retries: download retries per archive, with exponential backoff.
        extract: ``{"max_entry_mb", "max_archive_mb"}``: what one image and one archive may expand to.
    """

    def __init__(
        self,
        download: bool = True,
        verify: bool = True,
        base_url: str | None = None,
        retries: int = 3,
        extract: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.download = download
        self.verify = verify
        self.base_url = base_url
        self.retries = checked(RULES, "dataset.retries", retries)
        caps = {**vars(DEFAULT_CAPS), **(extract or {})}
        self.caps = SizeCaps(
            checked(RULES, MAX_ENTRY_KEY, caps.pop("max_entry_mb")),
            checked(RULES, MAX_ARCHIVE_KEY, caps.pop("max_archive_mb")),
        )
        if caps:
            raise FERError(f"dataset.extract.{sorted(caps)[0]}: no such key; use max_entry_mb or max_archive_mb")

    def build_dataset(self) -> None:
        request = SourceRequest(
            self.name,
            self.data_dir / "raw" / self.name,
            self.root / EXTRACTED,
            download=self.download,
            verify=self.verify,
            base_url=self.base_url,
            retries=self.retries,
            caps=self.caps,
        )
        build(self.root, source_of(self.name)(request), self.image_options)


class VIRIDataModule(PublishedDataModule):
    name = "viri"


class NVIEDataModule(PublishedDataModule):
    name = "nvie"


class FolderDataModule(ImageFilesDataModule):
    """A user's own data: ``<root>/visible/<Class>/*`` and/or ``<root>/infrared/<Class>/*``.

    Classes are the folder names, pairs match by file stem. The images stay where they are; the prepared
    dataset (manifest, rejected.csv, contact sheet) goes to ``<data_dir>/folder/<root name>-<8 hex of the
    absolute root's sha1>/``, so two folder datasets never share one.
    """

    name = "folder"

    def __init__(self, root: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not root:
            raise FERError("dataset=folder needs dataset.root=DIR (DIR/visible/<Class>/*, DIR/infrared/<Class>/*)")
        self.source = Path(root).expanduser().resolve()

    @property
    def root(self) -> Path:
        digest = hashlib.sha1(str(self.source).encode()).hexdigest()[:8]
        return self.data_dir / "folder" / f"{self.source.name}-{digest}"

    def build_dataset(self) -> None:
        build(self.root, folder_sources(self.source), self.image_options)
