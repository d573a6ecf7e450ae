"""Perceptual loss (eq. 12): L1 between VGG-19 relu1_1 … relu5_1 features, at full and half resolution."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from julnet.models.vgg import VGG19Features


def perceptual_loss(vgg: VGG19Features, generated: Tensor, target: Tensor, scales: int = 2) -> Tensor:
    """Σ over scales and layers of mean |φ_i(I_gt) − φ_i(I_gen)|."""
    total = generated.new_zeros(())
    for scale in range(scales):
        if scale:
            generated = F.interpolate(generated, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
            target = F.interpolate(target, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
        for fake, real in zip(vgg(generated), vgg(target)):
            total = total + (fake.float() - real.float()).abs().mean()
    return total
