"""The uncertainty module (paper 3.2): per-pixel expected error and Laplacian log-scale.

It needs only an image and, optionally, a feature map, so it plugs into any generator
(paper 4.3.3 adds it to Wav2Lip).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# σ at initialisation when none is given: the default of `un.init_sigma` (a typical pixel error, see julnet.config).
DEFAULT_INIT_SIGMA = 0.05


class UncertaintyOutput(NamedTuple):
    error_pred: Tensor  # (B, 1, H, W), ε̂ >= 0: the error expected at each pixel
    log_sigma: Tensor  # (B, 1, H, W), τ = log σ: the uncertainty map


class UncertaintyModule(nn.Module):
    """A per-pixel MLP (1x1 convs with a little 3x3 context) with two heads, ε̂ and τ.

    The τ head's bias starts at log(init_sigma), so σ starts at a typical error, inside the histogram's bins,
    rather than at σ ≈ 1 where L_un2 has no gradient. `detach_image` / `detach_features` cut the generator
    off from the module's gradients through that input.
    """

    def __init__(
        self,
        feature_channels: int = 0,
        hidden: int = 64,
        detach_features: bool = False,
        log_sigma_range: tuple[float, float] = (-10.0, 10.0),
        init_sigma: float = DEFAULT_INIT_SIGMA,
        detach_image: bool = False,
    ):
        super().__init__()
        self.feature_channels = feature_channels
        self.detach_features = detach_features
        self.detach_image = detach_image
        self.log_sigma_range = log_sigma_range
        self.trunk = nn.Sequential(
            nn.Conv2d(3 + feature_channels, hidden, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.error_head = nn.Conv2d(hidden, 1, 1)
        self.log_sigma_head = nn.Conv2d(hidden, 1, 1)
        with torch.no_grad():
            self.log_sigma_head.bias.fill_(math.log(init_sigma))

    def forward(self, image: Tensor, features: Tensor | None = None) -> UncertaintyOutput:
        inputs = [image.detach() if self.detach_image else image]
        if self.feature_channels:
            if features is None:
                raise ValueError(f"this uncertainty module was built for {self.feature_channels} feature channels; got none")
            inputs.append(features.detach() if self.detach_features else features)
        h = self.trunk(torch.cat(inputs, 1))
        log_sigma = self.log_sigma_head(h).clamp(*self.log_sigma_range)
        return UncertaintyOutput(F.softplus(self.error_head(h)), log_sigma)
