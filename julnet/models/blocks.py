"""Convolution blocks shared by the generator and SyncNet (DINet's building blocks), in 1D and 2D."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
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


class NarrowConv2d(nn.Conv2d):
    """A stride-1, size-preserving convolution to few output channels (the face decoder's last layer, 128 -> 3, 7x7),
    computed on a CPU as one matrix product over all kernel taps followed by `F.fold`, which adds the shifted taps.

    Same parameters and state-dict layout as `nn.Conv2d(cin, cout, k, padding=k // 2)`. A CPU convolution to 3
    channels leaves most of each vector register empty; at 416x320 on one thread the face decoder's last layer takes
    280 ms forward + backward and 95 ms in inference this way, against 590 and 175 ms. The price is a transient
    tensor of cout * k * k channels (147 here, about the input's size). On other devices it runs as nn.Conv2d.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        if kernel_size % 2 == 0:
            raise ValueError(f"NarrowConv2d needs an odd kernel size to preserve the size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        b, c, h, w = x.shape
        k = self.kernel_size[0]
        # Row (o, i, j) of the product is output channel o's tap (k-1-i, k-1-j) at every pixel; fold adds row (o, i, j)
        # at offset (i - k // 2, j - k // 2), so the flipped kernel makes the sum a convolution (cross-correlation).
        taps = self.weight.flip(2, 3).permute(0, 2, 3, 1).reshape(-1, c)
        products = torch.bmm(taps.expand(b, -1, -1), x.flatten(2))
        return F.fold(products, (h, w), k, padding=k // 2) + self.bias.view(1, -1, 1, 1)


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
