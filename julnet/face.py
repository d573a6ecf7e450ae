"""Face-crop geometry shared by data, losses and inference: where the mouth region sits in a crop."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch.nn.functional as F
from torch import Tensor

ImageT = TypeVar("ImageT", Tensor, np.ndarray)

# At 416x320 the mouth region is the 256x256 square at rows 128..384, cols 32..288 (SPEC 1).
_REF_H, _REF_W, _SIDE, _TOP, _LEFT = 416, 320, 256, 128, 32


def mouth_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the square mouth region in a face crop of this size: sized by the height and centred
    where the 416x320 region's centre falls, so a crop resized to another aspect (wav2lip's 96x96) keeps it on the mouth."""
    side = round(height * _SIDE / _REF_H)
    return round(height * _TOP / _REF_H), round(width * (_LEFT + _SIDE / 2) / _REF_W - side / 2), side


def mask_mouth(image: ImageT) -> ImageT:
    """The masked source: a copy of the face crop(s) (..., H, W) with the mouth region zeroed; a tensor (training
    step, evaluation, inference) or a uint8 array (the data path), so every stage masks the same pixels."""
    top, left, side = mouth_box(*image.shape[-2:])
    out = image.copy() if isinstance(image, np.ndarray) else image.clone()
    out[..., top : top + side, left : left + side] = 0
    return out


def crop_mouth(image: Tensor, size: int | None = None) -> Tensor:
    """The mouth region of face crop(s) (N, C, H, W), resized to size x size when given."""
    top, left, side = mouth_box(*image.shape[-2:])
    crop = image[..., top : top + side, left : left + side]
    if size is None or size == side:
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
