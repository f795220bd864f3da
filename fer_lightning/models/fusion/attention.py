"""``attention``: transformer blocks over both branches' last-stage spatial maps, then concat fusion of the
refined, pooled maps."""

from __future__ import annotations

import torch
from torch import nn

from fer_lightning.errors import FERError
from fer_lightning.modalities import CAMERAS
from fer_lightning.models.fusion.base import Fusion, register_fusion
from fer_lightning.models.fusion.fixed import ConcatFusion


@register_fusion("attention")
class AttentionFusion(Fusion):
    """Refines both branches' (N, C, h, w) maps with transformer blocks over the tokens of both.

    Each map's h*w positions become tokens (projected to ``dim``, plus a learned modality embedding); self-attention
    over the joint sequence lets every visible position attend to every thermal one and back. The result is added
    back to each map (zero-initialised projection, so training starts from plain concat fusion); the maps keep
    their shape, so each backbone's own pooling and attention gate still apply; the head reads both refined, pooled
    maps concatenated. ``cross_attention``: ``dim``, ``heads``, ``layers``, ``dropout``.
    """

    def __init__(self, features: int, map_channels: dict[str, int], cross_attention: dict | None = None, **settings):
        super().__init__(features, map_channels)
        self._build(map_channels, **(cross_attention or {}))

    @classmethod
    def width(cls, features: int) -> int:
        return 2 * features

    def _build(self, channels: dict[str, int], dim: int = 256, heads: int = 4, layers: int = 1, dropout: float = 0.1):
        if dim % heads:
            raise FERError(f"model.cross_attention: dim={dim} must be divisible by heads={heads}")
        self.proj_in = nn.ModuleDict({m: nn.Linear(channels[m], dim) for m in CAMERAS})
        self.modality_embedding = nn.Parameter(torch.randn(len(CAMERAS), dim) * 0.02)
        block = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.proj_out = nn.ModuleDict({m: nn.Linear(dim, channels[m]) for m in CAMERAS})
        for proj in self.proj_out.values():
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def refine(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = [
            self.proj_in[m](maps[m].flatten(2).transpose(1, 2)) + self.modality_embedding[k]
            for k, m in enumerate(CAMERAS)
        ]
        mixed = self.encoder(torch.cat(tokens, dim=1)).split([t.shape[1] for t in tokens], dim=1)
        return {
            m: maps[m] + self.proj_out[m](out).transpose(1, 2).reshape(maps[m].shape)
            for m, out in zip(CAMERAS, mixed, strict=True)
        }

    def forward(self, net, images, keep):
        maps = {m: net.backbones[m].feature_map(x) for m, x in images.items()}
        feats = {m: net.backbones[m].pool(f) for m, f in maps.items()} if net.aux_heads is not None else {}
        if keep is not None:
            maps = {m: f * keep[m][:, None, None, None] for m, f in maps.items()}
        refined = {m: net.backbones[m].pool(f) for m, f in self.refine(maps).items()}
        return {"logits": net.head(ConcatFusion.combine(refined["visible"], refined["infrared"])), "features": feats}
