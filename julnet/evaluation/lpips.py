"""LPIPS-VGG (Zhang et al. 2018, v0.1) in plain torch, without importing the `lpips` package (whose imports
need libraries that cannot be installed here).

The VGG-16 trunk takes the public ImageNet `vgg16` state dict (`features.N` keys) from a configured
location; the 1x1 linear heads come from the file the `lpips` wheel ships (lpips/weights/v0.1/vgg.pth),
found with importlib without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from julnet.artifacts import read_state
from julnet.config import PretrainedWeights
from julnet.evaluation.unavailable import Unavailable
from julnet.models.vgg import VGG16_LAYOUT, VGG16_TAPS, VGGTrunk
from julnet.pretrained import read_state_dict

_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS's ScalingLayer, applied to images in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_HEADS = ("weights", "v0.1", "vgg.pth")


class LPIPS(nn.Module):
    """Per-image LPIPS-VGG distance between (B, 3, H, W) images in [0, 1]; frozen, eval only."""

    def __init__(self):
        super().__init__()
        self.net = VGGTrunk(VGG16_LAYOUT, VGG16_TAPS)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def load_heads(self, path: Path) -> None:
        """Load the linear heads from the lpips release file (keys `lin{k}.model.1.weight`)."""
        state = read_state(path)
        for k, lin in enumerate(self.lins):
            lin.weight.copy_(state[f"lin{k}.model.1.weight"])

    def forward(self, generated: Tensor, target: Tensor) -> Tensor:
        """(B,) distances: unit-normalised features' squared differences, weighted, averaged, summed over layers."""
        feats0 = self.net((2 * generated - 1 - self.shift) / self.scale)
        feats1 = self.net((2 * target - 1 - self.shift) / self.scale)
        total = generated.new_zeros(generated.shape[0])
        for f0, f1, lin in zip(feats0, feats1, self.lins):
            diff = (_unit(f0) - _unit(f1)) ** 2
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total


def _unit(features: Tensor, eps: float = 1e-10) -> Tensor:
    """Features divided by their L2 norm over channels, as lpips.normalize_tensor does."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_heads_path() -> Path | None:
    """The shipped LPIPS-VGG head weights of the installed `lpips` package, located without importing it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*_HEADS)
        if path.is_file():
            return path
    return None


def load_lpips(weights: PretrainedWeights, key: str = "evaluation.lpips_vgg16") -> LPIPS | Unavailable:
    """LPIPS-VGG with ImageNet VGG-16 and the released heads, or Unavailable when either is missing.

    Random VGG-16 weights would make the metric meaningless, so `allow_random_init` is not honoured here.
    A configured but unusable path raises `julnet.pretrained.MissingWeightsError`.
    """
    if weights.path is None:
        return Unavailable(f"LPIPS needs ImageNet VGG-16 weights (the public vgg16 state dict, features.N keys): set {key}.path")
    heads = lpips_heads_path()
    if heads is None:
        return Unavailable("LPIPS needs the linear heads shipped by the lpips package (lpips/weights/v0.1/vgg.pth): pip install --no-deps lpips")
    model = LPIPS()
    model.net.load_public_state_dict(read_state_dict(weights, "VGG-16 (LPIPS)", key))
    model.load_heads(heads)
    return model
