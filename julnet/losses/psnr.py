"""PSNR on [0, 1] images, over the whole face crop and over the mouth region (paper 4.1).

A measure, not a loss term: it sits here, below training, because training's held-out check reports it as the
evaluation suite does (julnet.evaluation re-exports it)."""

from __future__ import annotations

import torch
from torch import Tensor

from julnet.face import crop_mouth

# Per-image MSE floor: identical images score 100 dB instead of inf, so batch means stay finite.
_MIN_MSE = 1e-10


def psnr(generated: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Mean over the batch of per-image PSNR (dB, peak 1) of (B, 3, H, W) images in [0, 1].

    `mask` (broadcastable to (B, 1, H, W), bool or {0, 1}) restricts each image's MSE to its pixels.
    Per-image MSE is floored at 1e-10, so identical images give 100 dB rather than inf.
    """
    if generated.shape != target.shape or generated.dim() != 4:
        raise ValueError(f"psnr wants two (B, C, H, W) tensors of one shape, got {tuple(generated.shape)} and {tuple(target.shape)}")
    squared = (generated.double() - target.double()) ** 2
    if mask is None:
        mse = squared.mean(dim=(1, 2, 3))
    else:
        weight = mask.double().expand(generated.shape[0], 1, *generated.shape[2:]).expand_as(squared)
        count = weight.sum(dim=(1, 2, 3))
        if bool((count == 0).any()):
            raise ValueError("psnr mask selects no pixel in at least one image")
        mse = (squared * weight).sum(dim=(1, 2, 3)) / count
    return float((10 * torch.log10(1.0 / mse.clamp_min(_MIN_MSE))).mean())


def mouth_psnr(generated: Tensor, target: Tensor) -> float:
    """PSNR (as `psnr`) over the mouth region of each face crop (`julnet.face.mouth_box`)."""
    return psnr(crop_mouth(generated), crop_mouth(target))
