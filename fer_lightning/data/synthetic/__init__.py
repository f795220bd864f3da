"""Procedural paired visible + infrared face images for five expressions.

The zero-download default dataset. Each sample is one face geometry (subject identity + expression +
pose, :mod:`.subject`, :mod:`.geometry`, :mod:`.scene`) rendered twice: as an RGB photo with clutter, lighting
and noise (:mod:`.visible`), and as a temperature field shown through a FLIR-style false-colour palette
(:mod:`.thermal`). The two modalities are made to fail on different samples (bad lighting spoils the photo,
sensor artifacts spoil the thermal image; :mod:`.knobs` sets how often), so fusing them pays off.
:mod:`.generate` writes a dataset of them.
"""

from fer_lightning.data.synthetic.generate import (
    CONDITIONS,
    PLANTED_FACES,
    build_dataset,
    generate,
    planted_boxes,
    render_sample,
)
from fer_lightning.data.synthetic.geometry import CLASSES, Geometry, Layer, Pose, build_geometry
from fer_lightning.data.synthetic.knobs import DIFFICULTIES, Knobs
from fer_lightning.data.synthetic.scene import Scene, sample_scene
from fer_lightning.data.synthetic.subject import Subject
from fer_lightning.data.synthetic.thermal import PALETTES, render_thermal
from fer_lightning.data.synthetic.visible import render_visible

__all__ = [
    "CLASSES",
    "CONDITIONS",
    "DIFFICULTIES",
    "PALETTES",
    "PLANTED_FACES",
    "Geometry",
    "Knobs",
    "Layer",
    "Pose",
    "Scene",
    "Subject",
    "build_dataset",
    "build_geometry",
    "generate",
    "planted_boxes",
    "render_sample",
    "render_thermal",
    "render_visible",
    "sample_scene",
]
