"""The weighted total (eq. 14)."""

from __future__ import annotations

from torch import Tensor

from julnet.config import LossWeights

# The terms of eq. 14 in order (un, ad, pe, sync): the config's λ fields are their one definition.
LOSS_TERMS: tuple[str, ...] = tuple(LossWeights.model_fields)


def total_loss(parts: dict[str, Tensor], weights: LossWeights) -> Tensor:
    """Eq. 14: L = λ1 L_un + λ2 L_ad + λ3 L_pe + λ4 L_sync (a missing part counts as 0)."""
    return sum(getattr(weights, name) * parts[name] for name in LOSS_TERMS if name in parts)  # type: ignore[return-value]
