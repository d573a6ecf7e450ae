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


def is_channels_last(x: Tensor) -> bool:
    """Whether x is laid out channels_last and not also plain contiguous (a map with one channel or one pixel is both),
    so that a layer building its output itself should build it channels_last."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _phase_taps(kernel: Tensor, dim: int) -> Tensor:
    """A 3-tap kernel along `dim` -> its two 2-tap phases, stacked first.

    After a 2x nearest upsampling, output row 2i reads upsampled rows 2i - 1, 2i, 2i + 1, which are input rows
    i - 1, i, i: taps [t0, t1 + t2] over rows (i - 1, i). Row 2i + 1 reads input rows i, i, i + 1: [t0 + t1, t2]
    over rows (i, i + 1). Columns alike.
    """
    t0, t1, t2 = kernel.unbind(dim)
    return torch.stack([torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)])


def upsampled_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(2x nearest upsampling of x) for a 3x3 size-preserving conv, as one 2x2 convolution of x itself.

    Each of the four output phases (even/odd row, even/odd column) is a 2x2 convolution of x (`_phase_taps`):
    16 taps per input pixel instead of 36, so 4/9 of the FLOPs. One convolution computes all four phases (4 x cout
    channels); one copy interleaves them.
    """
    b, c, h, w = x.shape
    # (a2, a, o, c, 2, 2) -> output channel (o, a, a2): phase (row a, column a2) of channel o
    weight = _phase_taps(_phase_taps(conv.weight, 2), 4).permute(2, 1, 0, 3, 4, 5).reshape(-1, c, 2, 2)
    bias = conv.bias.repeat_interleave(4) if conv.bias is not None else None
    z = F.conv2d(x, weight, bias, padding=1)  # (b, 4 cout, h + 1, w + 1): position p reads input rows p - 1 and p
    sb, sc, sh, sw = z.stride()
    # out[n, o, i, a, j, a2] = z[n, 4o + 2a + a2, i + a, j + a2]: phase a of row i reads rows (i - 1 + a, i + a)
    phases = torch.as_strided(z, (b, z.shape[1] // 4, h, 2, w, 2), (sb, 4 * sc, sh, 2 * sc + sh, sw, sc + sw))
    if is_channels_last(x):
        return phases.permute(0, 2, 3, 4, 5, 1).reshape(b, 2 * h, 2 * w, -1).permute(0, 3, 1, 2)
    return phases.reshape(b, -1, 2 * h, 2 * w)


class UpBlock(nn.Sequential):
    """2x nearest upsampling followed by a same block (2D, 3x3), the upsampling and convolution run together by
    `upsampled_conv` at 4/9 of the FLOPs (same function, same parameters and state-dict keys as the layers listed).

    On a CPU thread, the face decoder's last up-block (128 channels, 208x160 -> 416x320, batch norm included) takes
    0.66 s forward + backward and 0.28 s in inference, against 1.16 and 0.40 s for the layers run one by one.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), *same_block(2, cin, cout, 3))

    def forward(self, x: Tensor) -> Tensor:
        _, conv, *rest = self  # the first layer, the upsampling, is folded into the convolution
        x = upsampled_conv(x, conv)
        for layer in rest:
            x = layer(x)
        return x


class NarrowConv2d(nn.Conv2d):
    """A stride-1, size-preserving convolution to few output channels (the face decoder's last layer, 128 -> 3, 7x7),
    computed on a CPU as one matrix product over all kernel taps followed by `F.fold`, which adds the shifted taps.

    Same parameters and state-dict layout as `nn.Conv2d(cin, cout, k, padding=k // 2)`. A CPU convolution to 3
    channels leaves most of each vector register empty; at 416x320 on one thread the face decoder's last layer takes
    313 ms forward + backward and 109 ms in inference this way, against 634 and 199 ms. The price is a transient
    tensor of cout * k * k channels (147 here) for one frame at a time. On other devices it runs as nn.Conv2d.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        if kernel_size % 2 == 0:
            raise ValueError(f"NarrowConv2d needs an odd kernel size to preserve the size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        _, c, h, w = x.shape
        k = self.kernel_size[0]
        # Row (o, i, j) of the product is output channel o's tap (k-1-i, k-1-j) at every pixel; fold adds row (o, i, j)
        # at offset (i - k // 2, j - k // 2), so the flipped kernel makes the sum a convolution (cross-correlation).
        taps = self.weight.flip(2, 3).permute(0, 2, 3, 1).reshape(1, -1, c)
        # One frame at a time, so the products never take more memory than one frame's
        out = torch.cat([F.fold(torch.bmm(taps, frame.flatten(2)), (h, w), k, padding=k // 2) for frame in x.split(1)])
        return out + self.bias.view(1, -1, 1, 1)


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
