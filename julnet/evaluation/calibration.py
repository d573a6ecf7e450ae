"""How well predicted uncertainty σ ranks and sizes the true error ε.

Ranking: Spearman correlation, sparsification / AUSE and AURG. Size (σ read as the scale of a Laplace(0, σ) on the
error, as the loss trains it): negative log-likelihood, interval coverage and the uncertainty calibration error (UCE)
with its reliability diagram. Frame level: risk-coverage of a per-frame confidence against each frame's error (AURC).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class Sparsification(NamedTuple):
    """Removed fractions, mean error of the rest when removing by σ (curve) and by ε (oracle), and AUSE."""

    fractions: np.ndarray
    curve: np.ndarray
    oracle: np.ndarray
    ause: float


def _flat_pair(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as flat float64 arrays, after checking they cover the same pixels."""
    a, b = (x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64) for x in (sigma, error))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"sigma and error must be non-empty and of one shape, got {a.shape} and {b.shape}")
    return a.ravel(), b.ravel()


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a flat array, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size)
    ranks[order] = ((starts + ends - 1) / 2 + 1)[group]
    return ranks


def spearman(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray) -> float:
    """Spearman rank correlation between σ and ε over all pixels (average ranks for ties; nan if one is constant)."""
    a, b = _flat_pair(sigma, error)
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / denominator) if denominator > 0 else float("nan")


def _remaining_means(error_descending: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Mean error left after removing the first round(f·n) pixels of an ordering, for each fraction f."""
    n = error_descending.size
    return np.array([error_descending[int(round(f * n)) :].mean() for f in fractions])


def sparsification(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray, steps: int = 20) -> Sparsification:
    """Sparsification curve, its oracle and AUSE (area between them, trapezoid over the removed fraction).

    Removes the fractions 0, 1/steps, …, 1 − 1/steps of pixels, most uncertain first (curve) or largest
    error first (oracle), and takes the mean error of the rest; both start at the mean error, unnormalised.
    """
    a, b = _flat_pair(sigma, error)
    if steps < 2 or steps > b.size:
        raise ValueError(f"steps must be in 2..{b.size} (pixel count), got {steps}")
    fractions = np.arange(steps) / steps
    curve = _remaining_means(b[np.argsort(-a, kind="stable")], fractions)
    oracle = _remaining_means(b[np.argsort(-b, kind="stable")], fractions)
    gap = curve - oracle
    ause = float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(fractions)))
    return Sparsification(fractions, curve, oracle, ause)


COVERAGE_LEVELS = (0.5, 0.9)
"""Nominal levels of the σ intervals whose coverage the evaluation reports (as `coverage50_gap_sigma`, ...)."""
UCE_BINS = 10
"""Equal-count σ bins (per frame) of the uncertainty calibration error the evaluation reports."""

SIGMA_FLOOR = 1e-8
"""σ below this is raised to it in the likelihood-based metrics, so a zero σ gives a large finite value, not inf."""


def nll_laplace(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray) -> float:
    """Mean negative log-likelihood of the true error under Laplace(0, σ), log(2σ) + |ε|/σ per pixel: scores σ's size, not only its ranking."""
    a, b = _flat_pair(sigma, error)
    a = np.maximum(a, SIGMA_FLOOR)
    return float(np.mean(np.log(2 * a) + np.abs(b) / a))


def interval_coverage(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray, levels: tuple[float, ...] = COVERAGE_LEVELS) -> dict[float, float]:
    """Fraction of pixels with |ε| ≤ −σ·ln(1 − p), the Laplace(0, σ) interval holding p, per level p: p when σ is calibrated."""
    a, b = _flat_pair(sigma, error)
    if not all(0 < p < 1 for p in levels):
        raise ValueError(f"coverage levels must be in (0, 1), got {levels}")
    return {p: float(np.mean(np.abs(b) <= -np.maximum(a, 0) * np.log1p(-p))) for p in levels}


def random_gain(result: Sparsification) -> float:
    """AURG of a computed sparsification: area under the random-removal curve (flat at the mean error) minus the curve's; > 0 beats random."""
    gap = result.curve[0] - result.curve  # curve[0] (nothing removed) is the mean error, where removing at random stays
    return float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(result.fractions)))


def aurg(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray, steps: int = 20) -> float:
    """Area under the random-gain curve (Poggi et al. 2020) on `sparsification`'s grid: how much better than random σ orders the error."""
    return random_gain(sparsification(sigma, error, steps))


class Reliability(NamedTuple):
    """Per σ bin (equal-count, σ ascending): mean predicted expected |ε| (σ for a Laplace), mean observed |ε|, pixel count."""

    predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray

    @property
    def uce(self) -> float:
        """Bin-size-weighted mean of |mean |ε| − mean σ|; 0 when σ sizes the error."""
        return float(np.sum(self.counts * np.abs(self.observed - self.predicted)) / self.counts.sum())


def reliability(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray, bins: int = UCE_BINS) -> Reliability:
    """Reliability-diagram points from equal-count σ bins (quantiles, so sparse σ tails do not leave bins empty)."""
    a, b = _flat_pair(sigma, error)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    order = np.argsort(a, kind="stable")
    groups = np.array_split(order, min(bins, a.size))  # sizes differ by at most one pixel
    return Reliability(
        np.array([a[g].mean() for g in groups]), np.array([np.abs(b[g]).mean() for g in groups]), np.array([g.size for g in groups])
    )


def uce(sigma: Tensor | np.ndarray, error: Tensor | np.ndarray, bins: int = UCE_BINS) -> float:
    """Uncertainty calibration error: bin-size-weighted mean of |mean |ε| − mean σ| over `reliability`'s bins; 0 when σ sizes the error."""
    return reliability(sigma, error, bins).uce


class RiskCoverage(NamedTuple):
    """Coverage k/N, mean error of the k most confident frames (risk), the same keeping smallest errors first (oracle), and their means (AURC)."""

    coverage: np.ndarray
    risk: np.ndarray
    oracle_risk: np.ndarray
    aurc: float
    oracle_aurc: float


def _risk_curve(error_ordered: np.ndarray) -> np.ndarray:
    """Mean error of the first k frames of an ordering, for k = 1..N."""
    return np.cumsum(error_ordered) / np.arange(1, error_ordered.size + 1)


def aurc(confidence: Tensor | np.ndarray, frame_error: Tensor | np.ndarray) -> RiskCoverage:
    """Risk-coverage of per-frame confidence against each frame's true error: what keeping the most confident frames buys; lower AURC is better."""
    c, e = _flat_pair(confidence, frame_error)
    risk = _risk_curve(e[np.argsort(-c, kind="stable")])
    oracle = _risk_curve(np.sort(e))
    return RiskCoverage(np.arange(1, e.size + 1) / e.size, risk, oracle, float(risk.mean()), float(oracle.mean()))
