r"""The JULNet generator (paper 3.1, Fig. 3; DINet-style), its parts in the order data flows through them.

audio -> AudioEncoder -> F_A ---------------------------------------\
source -> SourceEncoder -> F_S --\                                   ParameterEncoder -> S, R, T
references -> ReferenceEncoder -> F_R --> IDEncoder(F_S, F_R) -> F_I /                  |
F_R -> DeformEncoder -> AdaAT(S, R, T) -> DeformDecoder -> F_D                           |
concat(F_D, F_S) -> FaceDecoder -> image (and its last features, for the uncertainty module)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from julnet.config import Config
from julnet.models.blocks import NarrowConv2d, ResBlock, UpBlock, down_block, same_block


class AudioEncoder(nn.Module):
    """1D convolutions that smooth per-frame audio features (B, D, T) into the vector F_A (paper 3.1.1)."""

    def __init__(self, in_dim: int, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            same_block(1, in_dim, channels, 5),
            ResBlock(1, channels),
            down_block(1, channels, channels),
            ResBlock(1, channels),
            down_block(1, channels, channels),
            same_block(1, channels, channels),
        )

    def forward(self, audio: Tensor) -> Tensor:
        return self.net(audio).mean(dim=2)


class FaceEncoder(nn.Module):
    """Strided conv stack to 1/downsample size; used as the source encoder and the reference encoder."""

    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__()
        layers = [same_block(2, in_channels, channels[0], 7)]
        layers += [down_block(2, cin, cout) for cin, cout in zip(channels, channels[1:])]
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)


class IDEncoder(nn.Module):
    """concat(F_S, F_R) -> global-pooled vector F_I carrying identity and head pose."""

    def __init__(self, feature_channels: int, channels: int):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            same_block(2, 2 * feature_channels, c, 3),
            same_block(2, c, c, 11),
            same_block(2, c, c, 11),
            down_block(2, c, c),
            same_block(2, c, c, 7),
            same_block(2, c, c, 7),
            down_block(2, c, c),
            same_block(2, c, c, 3),
            down_block(2, c, c),
            same_block(2, c, c, 3),
            down_block(2, c, c),
        )

    def forward(self, source_features: Tensor, reference_features: Tensor) -> Tensor:
        return self.net(torch.cat([source_features, reference_features], 1)).mean(dim=(2, 3))


class AffineParams(NamedTuple):
    scale: Tensor  # (B, C), in (0, 2)
    rotation: Tensor  # (B, C), radians in (-pi, pi)
    translation: Tensor  # (B, C, 2), normalised coordinates in (-1, 1)


class ParameterEncoder(nn.Module):
    """concat(F_A, F_I) -> per-channel scale S, rotation R and translation T for AdaAT (DINet's ranges)."""

    def __init__(self, in_dim: int, feature_channels: int):
        super().__init__()
        self.common = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True))
        self.scale = nn.Linear(in_dim, feature_channels)
        self.rotation = nn.Linear(in_dim, feature_channels)
        self.translation = nn.Linear(in_dim, 2 * feature_channels)

    def forward(self, audio_vector: Tensor, id_vector: Tensor) -> AffineParams:
        h = self.common(torch.cat([audio_vector, id_vector], 1))
        return AffineParams(
            scale=2 * torch.sigmoid(self.scale(h)),
            rotation=math.pi * torch.tanh(self.rotation(h)),
            translation=torch.tanh(self.translation(h)).view(h.shape[0], -1, 2),
        )


def deform_blocks(channels: int, count: int) -> nn.Sequential:
    """The deform encoder / decoder: residual blocks at 1/4 size."""
    return nn.Sequential(*[ResBlock(2, channels) for _ in range(count)])


class AdaAT(nn.Module):
    """Eq. 1: resample each channel c by its own affine map [x', y'] = S_c Rot(R_c) [x, y] + T_c.

    Sampling is per channel in 2D with align_corners=True, so S=1, R=0, T=0 is the exact identity
    and a translation of 2k/(W-1) moves the map by k pixels.
    """

    def forward(self, features: Tensor, params: AffineParams) -> Tensor:
        b, c, h, w = features.shape
        ys = torch.linspace(-1, 1, h, device=features.device, dtype=features.dtype)
        xs = torch.linspace(-1, 1, w, device=features.device, dtype=features.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        cos, sin = torch.cos(params.rotation), torch.sin(params.rotation)
        s = params.scale[..., None, None]
        tx, ty = params.translation[..., 0, None, None], params.translation[..., 1, None, None]
        x_src = s * (cos[..., None, None] * grid_x - sin[..., None, None] * grid_y) + tx
        y_src = s * (sin[..., None, None] * grid_x + cos[..., None, None] * grid_y) + ty
        grid = torch.stack([x_src, y_src], dim=-1).view(b * c, h, w, 2)
        out = F.grid_sample(features.reshape(b * c, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.view(b, c, h, w)


class FaceDecoder(nn.Module):
    """concat(F_D, F_S) -> face image in [0, 1], keeping its last full-resolution features."""

    def __init__(self, feature_channels: int, channels: int, levels: int):
        super().__init__()
        layers: list[nn.Module] = [same_block(2, 2 * feature_channels, channels)]
        for _ in range(levels):
            layers += [UpBlock(channels, channels), ResBlock(2, channels)]
        self.body = nn.Sequential(*layers[:-1])
        self.to_image = NarrowConv2d(channels, 3, 7)

    def forward(self, deformed: Tensor, source_features: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(torch.cat([deformed, source_features], 1))
        return torch.sigmoid(self.to_image(features)), features


class GeneratorOutput(NamedTuple):
    image: Tensor  # (B, 3, H, W) in [0, 1]
    features: Tensor  # (B, decoder_channels, H, W), the face decoder's last features


class Generator(nn.Module):
    """Masked source + references + audio window -> face with the mouth repainted (paper Fig. 3)."""

    kind = "julnet"  # generator.kind

    def __init__(self, cfg: Config):
        super().__init__()
        g = cfg.generator
        feat = g.encoder_channels[-1]
        self.audio_encoder = AudioEncoder(cfg.audio.dim, g.audio_channels)
        self.source_encoder = FaceEncoder(3, g.encoder_channels)
        self.reference_encoder = FaceEncoder(3 * g.num_references, g.encoder_channels)
        self.id_encoder = IDEncoder(feat, g.id_channels)
        self.parameter_encoder = ParameterEncoder(g.audio_channels + g.id_channels, feat)
        self.deform_encoder = deform_blocks(feat, g.deform_blocks)
        self.adaat = AdaAT()
        self.deform_decoder = deform_blocks(feat, g.deform_blocks)
        self.face_decoder = FaceDecoder(feat, g.decoder_channels, len(g.encoder_channels) - 1)
        self.feature_channels = g.decoder_channels

    def forward(self, source: Tensor, references: Tensor, audio: Tensor) -> GeneratorOutput:
        f_a = self.audio_encoder(audio)
        f_s = self.source_encoder(source)
        f_r = self.reference_encoder(references)
        f_i = self.id_encoder(f_s, f_r)
        params = self.parameter_encoder(f_a, f_i)
        f_d = self.deform_decoder(self.adaat(self.deform_encoder(f_r), params))
        image, features = self.face_decoder(f_d, f_s)
        return GeneratorOutput(image, features)
