"""Least-squares GAN losses (eq. 10-11)."""

from __future__ import annotations

from torch import Tensor


def lsgan_generator(fake_scores: Tensor) -> Tensor:
    """L_G = E[(D(I_gen) − 1)²]."""
    return ((fake_scores.float() - 1) ** 2).mean()


def lsgan_discriminator(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """L_D = ½ (E[(D(I_gt) − 1)²] + E[D(I_gen)²])."""
    return 0.5 * (((real_scores.float() - 1) ** 2).mean() + (fake_scores.float() ** 2).mean())
