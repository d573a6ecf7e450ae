"""Convolution blocks shared by the generator and SyncNet (DINet's building blocks), in 1D and 2D."""

from __future__ import annotations

import copy

from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d}


def same_block(dim: int, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (size preserved, or divided by `stride` rounding up), batch norm, ReLU."""
    return nn.Sequential(_CONV[dim](cin, cout, kernel, stride, padding=kernel // 2), _NORM[dim](cout), nn.ReLU(inplace=True))


def down_block(dim: int, cin: int, cout: int, kernel: int = 3, *, pooled: bool = False) -> nn.Sequential:
    """Halve the size: a stride-2 conv block (as DINet; a quarter of the FLOPs of convolving at full size), or,
    with `pooled`, a same block then 2x average pooling (the layout SyncNet's trained weights were saved with)."""
    if pooled:
        return nn.Sequential(*same_block(dim, cin, cout, kernel), _POOL[dim](2, ceil_mode=True))
    return same_block(dim, cin, cout, kernel, stride=2)


def up_block(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """2x nearest upsampling followed by a same block (2D)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *same_block(2, cin, cout, kernel))


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, dim: int, channels: int, kernel: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            _NORM[dim](channels),
            nn.ReLU(),
            _CONV[dim](channels, channels, kernel, padding=kernel // 2),
            _NORM[dim](channels),
            nn.ReLU(inplace=True),
            _CONV[dim](channels, channels, kernel, padding=kernel // 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` in which every batch norm that directly follows a convolution is folded into it.

    The same function with one pass over the activations fewer (~7 % of the paper generator's inference time on a
    CPU); for inference only, since the copy has no batch norm left to train. `model` itself is left as it was; a
    model this function returned is returned as it is (folding it again would only copy it).
    """
    if getattr(model, "batch_norm_folded", False):
        return model
    model = copy.deepcopy(model).eval()
    model.batch_norm_folded = True
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                conv, norm = seq[i], seq[i + 1]
                if type(conv) in (nn.Conv1d, nn.Conv2d) and type(norm) in (nn.BatchNorm1d, nn.BatchNorm2d) and norm.track_running_stats:
                    seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return model
