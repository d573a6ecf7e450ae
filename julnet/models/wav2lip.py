r"""A Wav2Lip-style generator (Prajwal et al., ACM MM 2020, Fig. 2): the family `generator.kind=wav2lip`.

source (mouth masked) -> lower half blanked --\
references --------------------------------------> FaceEncoder: stride-2 conv levels, each level's output kept as a skip
audio window (mel x time image) -> AudioEncoder -> F_A, broadcast over the deepest face features
concat(deepest skip, F_A) -> FaceDecoder: transposed-conv levels, each concatenated with its skip
-> output block -> image (and the output block's features, for the uncertainty module)

Where julnet departs from Wav2Lip, and why:
- the mel window is julnet's per-frame log-mel features over `audio.window` frames, an (audio.dim x window) array
  treated as a one-channel 2D image (Wav2Lip: an 80 x 16 mel-step image), so shards serve both families;
- the lower half of the source is blanked here, on top of julnet's mouth mask, so data, evaluation and inference
  hand both families the same masked source;
- the audio embedding joins the face features at the encoder's deepest level by broadcasting, so any crop whose
  sides are multiples of 2^(levels - 1) works (Wav2Lip: 96x96 down to 1x1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from julnet.config import Config
from julnet.models.generator import GeneratorOutput


class Conv(nn.Module):
    """Wav2Lip's conv block: conv, batch norm, ReLU; `residual` adds the block's input before the ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int | tuple[int, int] = 1, residual: bool = False):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return F.relu(out + x if self.residual else out)


def up_conv(cin: int, cout: int) -> nn.Sequential:
    """Wav2Lip's transposed conv block: exactly doubles height and width."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FaceEncoder(nn.Module):
    """concat(lower-half-masked source, references) -> one feature map per level (the skips), finest first."""

    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__()
        levels = [Conv(in_channels, channels[0], 7)]
        for cin, cout in zip(channels, channels[1:]):
            levels.append(nn.Sequential(Conv(cin, cout, 3, 2), Conv(cout, cout, residual=True), Conv(cout, cout, residual=True)))
        self.levels = nn.ModuleList(levels)

    def forward(self, faces: Tensor) -> list[Tensor]:
        skips = []
        for level in self.levels:
            faces = level(faces)
            skips.append(faces)
        return skips


class AudioEncoder(nn.Module):
    """(B, D, T) mel window as a (B, 1, D, T) image -> F_A (B, C): convs striding over mel bins, then the mean."""

    def __init__(self, channels: list[int]):
        super().__init__()
        layers = [Conv(1, channels[0])]
        for cin, cout in zip(channels, channels[1:]):
            layers += [Conv(cin, cout, 3, (2, 1)), Conv(cout, cout, residual=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, audio: Tensor) -> Tensor:
        return self.net(audio.unsqueeze(1)).mean(dim=(2, 3))


class FaceDecoder(nn.Module):
    """concat(deepest skip, F_A) -> upsampled level by level, each joined with the encoder's skip at its size."""

    def __init__(self, channels: list[int], audio_channels: int):
        super().__init__()
        self.bottleneck = Conv(channels[-1] + audio_channels, channels[-1])
        self.ups = nn.ModuleList(up_conv(cin, cout) for cin, cout in zip(channels[:0:-1], channels[-2::-1]))
        self.fuse = nn.ModuleList(Conv(2 * c, c) for c in channels[-2::-1])

    def forward(self, skips: list[Tensor], audio_vector: Tensor) -> Tensor:
        deepest = skips[-1]
        x = self.bottleneck(torch.cat([deepest, audio_vector[..., None, None].expand(-1, -1, *deepest.shape[-2:])], 1))
        for up, fuse, skip in zip(self.ups, self.fuse, skips[-2::-1]):
            x = fuse(torch.cat([up(x), skip], 1))
        return x


class Wav2LipGenerator(nn.Module):
    """Masked source + reference(s) + audio window -> face with the lower half repainted (Wav2Lip's generator)."""

    kind = "wav2lip"  # generator.kind

    def __init__(self, cfg: Config):
        super().__init__()
        w, refs = cfg.generator.wav2lip, cfg.generator.num_references
        self.face_encoder = FaceEncoder(3 + 3 * refs, w.face_channels)
        self.audio_encoder = AudioEncoder(w.audio_channels)
        self.face_decoder = FaceDecoder(w.face_channels, w.audio_channels[-1])
        self.output_block = Conv(w.face_channels[0], w.output_channels)
        self.to_image = nn.Conv2d(w.output_channels, 3, 1)
        self.feature_channels = w.output_channels

    def forward(self, source: Tensor, references: Tensor, audio: Tensor) -> GeneratorOutput:
        half = source.shape[-2] // 2
        upper = torch.cat([source[..., :half, :], torch.zeros_like(source[..., half:, :])], -2)
        skips = self.face_encoder(torch.cat([upper, references], 1))
        features = self.output_block(self.face_decoder(skips, self.audio_encoder(audio)))
        return GeneratorOutput(torch.sigmoid(self.to_image(features)), features)
