"""The uncertainty module (paper 3.2): per-pixel expected error and Laplacian log-scale.

It needs only an image and, optionally, a feature map, so it plugs into any generator
(paper 4.3.3 adds it to Wav2Lip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from julnet.models.blocks import is_channels_last

# σ at initialisation when none is given: the default of `un.init_sigma` (a typical pixel error, see julnet.config).
DEFAULT_INIT_SIGMA = 0.05


class UncertaintyOutput(NamedTuple):
    error_pred: Tensor  # (B, 1, H, W), ε̂ >= 0: the error expected at each pixel
    log_sigma: Tensor  # (B, 1, H, W), τ = log σ: the uncertainty map


def _matmul(weight: Tensor, x: Tensor) -> Tensor:
    """(O, C) weight times each pixel of x (B, C, H, W) -> (B, O, H, W) in x's memory format, without a copy."""
    if is_channels_last(x):
        return F.linear(x.permute(0, 2, 3, 1), weight).permute(0, 3, 1, 2)
    # bmm, not matmul: matmul would copy x into (pixels, C) first, at 1.3x the time of the forward + backward
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x.flatten(2)).view(x.shape[0], -1, *x.shape[2:])


class Pointwise(nn.Conv2d):
    """A 1x1 convolution computed as matrix products; given several inputs, it reads them as one concatenation
    without building it.

    Same parameters and state-dict layout as `nn.Conv2d(cin, cout, 1)`. On a CPU thread at 416x320, the module's
    first layer (image + 128 decoder channels) takes 112 ms forward + backward and 20 ms in inference, against
    158 and 46 ms for `torch.cat` and a Conv2d.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, inputs: Tensor | Sequence[Tensor]) -> Tensor:
        parts = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if sum(x.shape[1] for x in parts) != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels in all, got {[x.shape[1] for x in parts]}")
        weight, start, out = self.weight.flatten(1), 0, None
        for x in parts:
            part = _matmul(weight[:, start : start + x.shape[1]], x)
            out = part if out is None else out.add_(part)  # in place: no further full-size tensor
            start += x.shape[1]
        return out.add_(self.bias.to(out.dtype).view(1, -1, 1, 1))  # in the products' dtype under autocast, as Conv2d


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
            Pointwise(3 + feature_channels, hidden),  # reads [image, features] as one input
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            Pointwise(hidden, hidden),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.error_head = Pointwise(hidden, 1)
        self.log_sigma_head = Pointwise(hidden, 1)
        with torch.no_grad():
            self.log_sigma_head.bias.fill_(math.log(init_sigma))

    def forward(self, image: Tensor, features: Tensor | None = None) -> UncertaintyOutput:
        inputs = [image.detach() if self.detach_image else image]
        if self.feature_channels:
            if features is None:
                raise ValueError(f"this uncertainty module was built for {self.feature_channels} feature channels; got none")
            inputs.append(features.detach() if self.detach_features else features)
        h = self.trunk(inputs)
        log_sigma = self.log_sigma_head(h).clamp(*self.log_sigma_range)
        return UncertaintyOutput(F.softplus(self.error_head(h)), log_sigma)
