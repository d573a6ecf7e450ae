"""Uncertainty losses (paper 3.2-3.4.1): L_un = L_un1 + L_un2, plus the error-prediction term.

L_un2 is eq. 8's histogram KL plus a tail term (`tail_mismatch`) that gives σ beyond the bins a gradient.

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
    # (B, N): the softmax runs over the bins in the outer dimension, 5x faster on a CPU than over an inner one of B.
    sq = (centres.view(-1, 1) - values.reshape(1, -1)) ** 2 / k2
    logits = -sq if cfg.assignment == "normalized" else cfg.kernel_scale * torch.exp(-sq)
    return torch.softmax(logits, dim=0).mean(dim=1)


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


# Values are floored here before taking logs in the tail term: far below one 8-bit step of ε (1/765 ≈ 1.3e-3),
# so only exact zeros are moved, and log 0 never appears.
_TAIL_FLOOR = 1e-4


def tail_mismatch(error: Tensor, sigma: Tensor, centres: Tensor) -> Tensor:
    """L_un2's tail term: Σ over both edges of (mean log-overshoot of σ − that of ε)² beyond the outer centres.

    The edge bins absorb every value beyond them, so the KL cannot tell σ = 2·c_{B−1} from σ = 100·c_{B−1} and its
    gradient there decays like exp(−distance²): σ out of the bins' range gets none, in either direction. This term
    compares how far beyond each edge the two distributions reach, D⁺(x) = mean_i max(0, log x_i − log c_{B−1})
    and D⁻(x) = mean_i max(0, log c_0 − log x_i). It is 0 when σ = ε (like the KL), and its gradient on each
    out-of-range τ = log σ is 2(D(σ) − D(ε))/n, which does not vanish however far σ strayed and points toward
    ε's own overshoot: toward the bins when σ overshoots more than ε does.
    """
    log_lo, log_hi = centres[0].clamp_min(_TAIL_FLOOR).log(), centres[-1].clamp_min(_TAIL_FLOOR).log()

    def overshoot(x: Tensor) -> tuple[Tensor, Tensor]:
        log_x = x.clamp_min(_TAIL_FLOOR).log()
        return (log_x - log_hi).clamp_min(0).mean(), (log_lo - log_x).clamp_min(0).mean()

    (err_hi, err_lo), (sig_hi, sig_lo) = overshoot(error), overshoot(sigma)
    return (sig_hi - err_hi) ** 2 + (sig_lo - err_lo) ** 2


def histogram_loss(error: Tensor, sigma: Tensor, cfg: HistogramConfig) -> tuple[Tensor, Tensor, Tensor]:
    """L_un2 = eq. 8's KL + tail_weight · tail term, which keeps a gradient on σ beyond the bins; returns (L_un2, kl, tail)."""
    kl, _, _ = histogram_kl(error, sigma, cfg)
    tail = tail_mismatch(error, sigma, bin_centres(error, cfg)) if cfg.tail_weight else kl.new_zeros(())
    return kl + cfg.tail_weight * tail, kl, tail


def uncertainty_loss(
    generated: Tensor, target: Tensor, out: UncertaintyOutput, un: UncertaintyConfig, hist: HistogramConfig
) -> dict[str, Tensor]:
    """Eq. 9 (L_un = L_un1 + L_un2) plus the L1 term that trains ε̂ to predict the true error.

    With `un.detach_error_in_kl`, L_un2 sees ε detached: it trains σ only and leaves the generator to L_un1.
    """
    error = error_map(generated.float(), target.float())
    log_sigma = out.log_sigma.float()
    sigma = torch.exp(log_sigma)
    un1 = laplace_nll(error, log_sigma)  # eq. 4
    un2, kl, tail = histogram_loss(error.detach() if un.detach_error_in_kl else error, sigma, hist)  # eq. 8 + tail
    error_pred = (out.error_pred.float() - error.detach()).abs().mean()
    total = un.un1_weight * un1 + un.un2_weight * un2 + un.error_pred_weight * error_pred  # eq. 9
    return {
        "un": total,
        "un1": un1,
        "un2": un2,
        "un2_kl": kl,
        "un2_tail": tail,
        "error_pred": error_pred,
        "sigma_mean": sigma.mean().detach(),
    }
