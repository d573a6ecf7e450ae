"""Patch discriminators (DINet): one over single frames, one over 5 frames stacked on channels."""

from __future__ import annotations

from torch import Tensor, nn

from julnet.config import DiscriminatorConfig


class PatchDiscriminator(nn.Module):
    """4x4 conv blocks with LeakyReLU 0.2 and 2x average pooling, then a 1x1 conv to one score per patch."""

    def __init__(self, in_channels: int, cfg: DiscriminatorConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(cfg.num_blocks):
            cout = min(cfg.max_channels, cfg.base_channels * 2 ** (i + 1))
            layers += [nn.Conv2d(cin, cout, 4, padding=1)]
            if i:
                layers += [nn.InstanceNorm2d(cout, affine=True)]
            layers += [nn.LeakyReLU(0.2, inplace=True), nn.AvgPool2d(2, ceil_mode=True)]
            cin = cout
        layers += [nn.Conv2d(cin, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)


def frame_discriminator(cfg: DiscriminatorConfig) -> PatchDiscriminator:
    return PatchDiscriminator(3, cfg)


def clip_discriminator(cfg: DiscriminatorConfig, frames: int = 5) -> PatchDiscriminator:
    return PatchDiscriminator(3 * frames, cfg)
