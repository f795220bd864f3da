"""Augmentation: albumentations pipelines applied to uint8 HWC images, per modality or to a pair at once.

Geometric transforms can be shared by the two images of a pair (``paired_geometry``), so a rotation of the
visible face is the same rotation of its thermal image; photometric transforms are always drawn per modality.
Every call takes an explicit seed, so augmentation is reproducible whatever the worker count or a resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.type_definitions import Targets


class TorchvisionPerspective(A.DualTransform):
    """torchvision's ``RandomPerspective(distortion_scale)``, the study's transform, for albumentations pipelines.

    Each corner moves inward by up to ``distortion_scale / 2`` of the side and the whole image is kept, the rest
    filled with ``fill``. ``A.Perspective`` does the opposite: it crops a quadrilateral inside the image and
    stretches it over the frame, so no border shows (at the old preset's scale 0.05-0.125 the face filled the
    frame; with torchvision's 0.5 it covers about 56 % of it on average).
    """

    _targets = (Targets.IMAGE,)

    def __init__(self, distortion_scale: float = 0.5, fill: float = 0, p: float = 0.5):
        super().__init__(p=p)
        self.distortion_scale = float(distortion_scale)
        self.fill = fill

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        dx, dy = int(self.distortion_scale * (w // 2)), int(self.distortion_scale * (h // 2))
        ix, iy = self.random_generator.integers(0, dx + 1, 4), self.random_generator.integers(0, dy + 1, 4)
        start = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
        # each corner moves towards the centre: +x on the left, -x on the right, +y at the top, -y at the bottom
        end = start + np.float32([ix, iy]).T * np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        return {"matrix": cv2.getPerspectiveTransform(start, end)}

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params) -> np.ndarray:
        fill = (self.fill,) * img.shape[2] if img.ndim == 3 else self.fill
        return cv2.warpPerspective(img, matrix, img.shape[1::-1], flags=cv2.INTER_LINEAR, borderValue=fill)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("distortion_scale", "fill")


def offline_variants(geometric: Sequence[A.BasicTransform]) -> list[list[A.BasicTransform]]:
    """The geometric pipelines the offline copies cycle through.

    A preset that is a single ``OneOf`` (the study's five transforms) yields one pipeline per member, so
    copies 1..25 are exactly five draws of each transform, as the study made them; else one pipeline.
    """
    if len(geometric) == 1 and isinstance(geometric[0], A.OneOf):
        return [[t] for t in geometric[0].transforms]
    return [list(geometric)]


class PairTransform:
    """Augments and resizes the images of one sample, returning uint8 CHW tensors.

    Args:
        modalities: the image keys of a sample, e.g. ``("visible", "infrared")``.
        image_size: side of the square output.
        geometric: albumentations transforms that move pixels (shared by a pair when ``paired_geometry``).
        photometric: albumentations transforms that change values only (drawn per modality).
        paired_geometry: apply one draw of ``geometric`` to both images of a pair.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        image_size: int,
        geometric: Sequence[A.BasicTransform] = (),
        photometric: Sequence[A.BasicTransform] = (),
        paired_geometry: bool = True,
    ):
        self.modalities = tuple(modalities)
        self.paired = paired_geometry and len(self.modalities) == 2
        # INTER_AREA when shrinking: a cache kept well above the input size must not alias
        resize = A.Resize(image_size, image_size, area_for_downscale="image")
        extra = {m: "image" for m in self.modalities[1:]} if self.paired else None
        self.geometric = A.Compose([*geometric, resize], additional_targets=extra)
        self.photometric = A.Compose(list(photometric)) if photometric else None

    def __call__(self, images: dict[str, np.ndarray], seed: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        if self.paired:
            first, *rest = self.modalities
            self.geometric.set_random_seed(int(rng.integers(2**31)))
            res = self.geometric(image=images[first], **{m: images[m] for m in rest})
            out = {first: res["image"], **{m: res[m] for m in rest}}
        else:
            for m in self.modalities:
                self.geometric.set_random_seed(int(rng.integers(2**31)))
                out[m] = self.geometric(image=images[m])["image"]
        if self.photometric is not None:
            for m in self.modalities:
                self.photometric.set_random_seed(int(rng.integers(2**31)))
                out[m] = self.photometric(image=out[m])["image"]
        return {m: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for m, a in out.items()}
