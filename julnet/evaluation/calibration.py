"""How well predicted uncertainty σ ranks the true error ε: Spearman correlation and sparsification / AUSE."""

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
