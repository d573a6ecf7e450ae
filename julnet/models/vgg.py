"""Frozen VGG conv trunks laid out like the public ImageNet VGG releases (`features.N` keys), so their
state dicts load as they are: VGG-19 for the perceptual loss (eq. 12), VGG-16 for LPIPS."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# Channel counts, "M" for 2x max pooling, up to the last tapped ReLU.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
VGG19_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGGTrunk(nn.Module):
    """A frozen VGG conv trunk returning the activations at `taps` (indices into `features`)."""

    def __init__(self, layout: Sequence[int | str], taps: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU()]
                cin = int(item)
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGTrunk:
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for index, layer in enumerate(self.features[: max(self.taps) + 1]):
            x = layer(x)
            if index in self.taps:
                out.append(x)
        return out

    def load_public_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load a public ImageNet VGG state dict; the classifier and layers past the last tap are ignored."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"not a VGG state dict with `features.N` keys: missing {missing[:3]}")
        self.load_state_dict({k: state[k] for k in own})


class VGG19Features(VGGTrunk):
    """VGG-19 relu1_1 … relu5_1 of an ImageNet-normalised [0, 1] image; `width` < 1 scales every layer's channels
    (random weights only: the public ones are full width)."""

    def __init__(self, width: float = 1.0):
        super().__init__([c if c == "M" else max(1, round(int(c) * width)) for c in VGG19_LAYOUT], VGG19_TAPS)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> list[Tensor]:
        return super().forward((image - self.mean) / self.std)
