"""The weighted total (eq. 14)."""

from __future__ import annotations

from torch import Tensor

from julnet.config import LossWeights


def total_loss(parts: dict[str, Tensor], weights: LossWeights) -> Tensor:
    """Eq. 14: L = λ1 L_un + λ2 L_ad + λ3 L_pe + λ4 L_sync (a missing part counts as 0)."""
    terms = {"un": weights.un, "ad": weights.ad, "pe": weights.pe, "sync": weights.sync}
    return sum(w * parts[name] for name, w in terms.items() if name in parts)  # type: ignore[return-value]
