"""Perceptual loss (eq. 12): L1 between VGG-19 relu1_1 … relu5_1 features, at full and half resolution."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from julnet.models.vgg import VGG19Features


def perceptual_loss(
    vgg: VGG19Features, generated: Tensor, target: Tensor, scales: int = 2, reduction: Literal["mean", "sum"] = "mean"
) -> Tensor:
    """Eq. 12: mean |φ_i(I_gt) − φ_i(I_gen)| per layer and scale, averaged over those terms (DINet) or summed.

    `mean` is what DINet's λ3 = 10 (reused by JULNet) was calibrated for; `sum` is eq. 12 literally, 5·scales × that.
    """
    total = generated.new_zeros(())
    terms = 0
    for scale in range(scales):
        if scale:
            generated = F.interpolate(generated, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
            target = F.interpolate(target, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
        for fake, real in zip(vgg(generated), vgg(target)):
            total = total + (fake.float() - real.float()).abs().mean()
            terms += 1
    return total / terms if reduction == "mean" else total
