"""Fréchet distance between Gaussian fits of image features (FID, paper 4.1), as pytorch-fid computes it."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from scipy import linalg
from torch import Tensor

from julnet.config import PretrainedWeights
from julnet.evaluation.unavailable import Unavailable

_INCEPTION = "FID needs InceptionV3 weights (pytorch-fid pt_inception-2015-12-05)"


class FeatureExtractor(Protocol):
    """Maps a batch of (B, 3, H, W) images in [0, 1] to (B, D) features (InceptionV3 pool3 for FID)."""

    def __call__(self, images: Tensor) -> Tensor: ...


def load_fid_extractor(weights: PretrainedWeights, key: str = "evaluation.fid_inception") -> FeatureExtractor | Unavailable:
    """The FID feature network, or Unavailable: FID on anything but the reference Inception is meaningless."""
    if weights.path is None:
        return Unavailable(f"{_INCEPTION}: none configured (set {key}.path)")
    return Unavailable(f"{_INCEPTION}: not implemented yet (configured path {weights.path} is not used)")


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of (N, D) features with N >= 2."""
    array = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"feature_statistics wants (N, D) features with N >= 2, got shape {array.shape}")
    return array.mean(axis=0), np.cov(array, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2·sqrt(sigma1·sigma2)), numerically guarded like pytorch-fid.

    A non-finite square root (singular product) is retried with eps added to both diagonals; the
    small imaginary parts sqrtm leaves from rounding are dropped, larger ones raise.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(sigma1 @ sigma2)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
