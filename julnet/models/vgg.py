"""VGG-19 feature pyramid for the perceptual loss (eq. 12), laid out like torchvision's `vgg19`.

Module indices match torchvision's `features.N`, so its public ImageNet state dict loads as is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# torchvision's configuration "E" up to relu5_1 (features.29): channel counts, "M" for max pooling.
_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
TAPS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Frozen VGG-19 returning relu1_1 … relu5_1 of an ImageNet-normalised [0, 1] image."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU()]
                cin = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)

    def forward(self, image: Tensor) -> list[Tensor]:
        x = (image - self.mean) / self.std
        taps = []
        last = max(TAPS.values())
        wanted = set(TAPS.values())
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                taps.append(x)
            if index == last:
                break
        return taps

    def load_torchvision_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load torchvision's vgg19 weights (classifier and layers past relu5_1 are ignored)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"not a torchvision vgg19 state dict: missing {missing[:3]}")
        self.load_state_dict({k: state[k] for k in own})
