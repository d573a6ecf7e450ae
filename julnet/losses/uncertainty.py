"""Uncertainty losses (paper 3.2-3.4.1): L_un = L_un1 + L_un2, plus the error-prediction term.

The module only needs images, so it works with any generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from julnet.config import HistogramConfig, UncertaintyConfig
from julnet.models.uncertainty import UncertaintyOutput


def error_map(generated: Tensor, target: Tensor) -> Tensor:
    """Eq. 2: ε = |Î − I|, averaged over colour channels -> (B, 1, H, W)."""
    return (generated - target).abs().mean(dim=1, keepdim=True)


def laplace_nll(error: Tensor, log_sigma: Tensor) -> Tensor:
    """Eq. 4: L_un1 = mean(ε / exp(τ)) + mean(τ); minimised at exp(τ) = ε."""
    return (error * torch.exp(-log_sigma)).mean() + log_sigma.mean()


def bin_centres(error: Tensor, cfg: HistogramConfig) -> Tensor:
    """c_j = u + α_j s for j = 0..B-1, with u, s the error's mean and std and α from 0 to α_max."""
    u, s = error.mean(), error.std()
    if cfg.detach_stats:
        u, s = u.detach(), s.detach()
    steps = torch.linspace(0.0, 1.0, cfg.bins, device=error.device, dtype=error.dtype)
    if cfg.spacing == "linear":
        alphas = cfg.alpha_max * steps
    else:
        alphas = torch.expm1(steps * torch.log1p(torch.tensor(cfg.alpha_max, dtype=error.dtype)))
    return u + alphas * s


def soft_histogram(values: Tensor, centres: Tensor, cfg: HistogramConfig) -> Tensor:
    """Eq. 6-7: differentiable histogram H(j) = mean_i assign_j(x_i) over the given bin centres.

    The kernel width k2 is `kernel_width` times the squared mean bin spacing, so it is scale-free.
    "normalized" assigns w_j / Σ_k w_k = softmax_j(−(c_j − x)² / k2); "softmax" is eq. 7 literally,
    softmax_j(k1 · exp(−(c_j − x)² / k2)), which spreads values far from every centre evenly.
    """
    spacing = ((centres[-1] - centres[0]) / (len(centres) - 1)).clamp_min(1e-12)
    k2 = cfg.kernel_width * spacing**2
    sq = (centres.view(1, -1) - values.reshape(-1, 1)) ** 2 / k2
    logits = -sq if cfg.assignment == "normalized" else cfg.kernel_scale * torch.exp(-sq)
    return torch.softmax(logits, dim=1).mean(dim=0)


def histogram_kl(error: Tensor, sigma: Tensor, cfg: HistogramConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 8: KL(H_ε || H_σ) on shared centres from ε's statistics; returns (kl, H_ε, H_σ).

    Both histograms are smoothed by eps and renormalised, so the KL is >= 0 and 0 for equal inputs.
    """
    centres = bin_centres(error, cfg)
    h_err = soft_histogram(error, centres, cfg)
    h_sig = soft_histogram(sigma, centres, cfg)
    p = (h_err + cfg.eps) / (1 + cfg.bins * cfg.eps)
    q = (h_sig + cfg.eps) / (1 + cfg.bins * cfg.eps)
    return (p * (p.log() - q.log())).sum(), h_err, h_sig


def uncertainty_loss(
    generated: Tensor, target: Tensor, out: UncertaintyOutput, un: UncertaintyConfig, hist: HistogramConfig
) -> dict[str, Tensor]:
    """Eq. 9 (L_un = L_un1 + L_un2) plus the L1 term that trains ε̂ to predict the true error."""
    error = error_map(generated.float(), target.float())
    log_sigma = out.log_sigma.float()
    un1 = laplace_nll(error, log_sigma)
    un2, _, _ = histogram_kl(error, torch.exp(log_sigma), hist)
    error_pred = (out.error_pred.float() - error.detach()).abs().mean()
    total = un.un1_weight * un1 + un.un2_weight * un2 + un.error_pred_weight * error_pred
    return {"un": total, "un1": un1, "un2": un2, "error_pred": error_pred, "sigma_mean": torch.exp(log_sigma).mean().detach()}
