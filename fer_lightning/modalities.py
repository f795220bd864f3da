"""The two cameras and the three training modalities, named once for every package."""

from __future__ import annotations

from fer_lightning.errors import FERError

# the cameras, the image kinds a sample can hold, in the order fusion models and manifests list them; "modality"
# names what a run trains on (CHOICES), "camera" one of these
CAMERAS = ("visible", "infrared")
# what a run trains on: one camera, or both fused
CHOICES = (*CAMERAS, "fusion")


def cameras(modality: str) -> tuple[str, ...]:
    """The images a ``modality`` run reads: both for ``fusion``, else the one named."""
    if modality not in CHOICES:
        raise FERError(f"modality={modality!r}: use {', '.join(CHOICES[:-1])} or {CHOICES[-1]}")
    return CAMERAS if modality == "fusion" else (modality,)
