"""Fusion modes: how two branches' features become one prediction (no training logic here).

Each mode is one :class:`Fusion` subclass registered with ``@register_fusion("<name>")`` (:mod:`.base`):

- ``interleave`` (the study: v0, i0, v1, i1, ...), ``concat`` and ``sum``: fixed mixing (:mod:`.fixed`);
- ``late``: a head per branch, their logits mixed by a mean or by learned weights (:mod:`.late`);
- ``gated``: per-sample weights over the two modalities (softmax, they sum to 1) from both pooled features and cheap
  image-quality statistics; the fused feature is the weighted sum (:mod:`.gated`);
- ``attention``: transformer blocks over both branches' last-stage spatial maps (:mod:`.attention`).
"""

from fer_lightning.models.fusion.base import (
    FUSIONS,
    LATE_COMBINES,
    FixedFusion,
    Fusion,
    check_fusion,
    fuse,
    fused_features,
    one_camera_modes,
    register_fusion,
)

# isort: off
# The built-in modes register in this order, the order errors, docs and the tests list them in.
from fer_lightning.models.fusion.fixed import ConcatFusion, InterleaveFusion, SumFusion
from fer_lightning.models.fusion.late import LateFusion
from fer_lightning.models.fusion.gated import (
    GatedFusion,
    gate_target,
    image_quality,
    junk_images,
    modality_weight_summary,
)
from fer_lightning.models.fusion.attention import AttentionFusion

# isort: on
from fer_lightning.modalities import CAMERAS

__all__ = [
    "CAMERAS",
    "FUSIONS",
    "LATE_COMBINES",
    "AttentionFusion",
    "ConcatFusion",
    "FixedFusion",
    "Fusion",
    "GatedFusion",
    "InterleaveFusion",
    "LateFusion",
    "SumFusion",
    "check_fusion",
    "fuse",
    "fused_features",
    "gate_target",
    "image_quality",
    "junk_images",
    "modality_weight_summary",
    "one_camera_modes",
    "register_fusion",
]
