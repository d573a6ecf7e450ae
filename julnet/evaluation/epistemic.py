"""Epistemic uncertainty without retraining: how much the generated face moves when only its references change.

σ (the uncertainty module) is aleatoric, how noisy the mouth region is. The references are a free input of this
model, so re-running the generator on K reference sets drawn from the same video and taking the per-pixel spread
of its outputs says where the model is unsure of the face itself (a face unlike its training data moves more).
The first set is the one the output was generated with, so its image is reused and only K − 1 passes are added.
`julnet generate` (generate.epistemic_samples) and the evaluation suite (evaluation.epistemic_samples) use it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def reference_spread(generator: nn.Module, first: Tensor, source: Tensor, references: Tensor, audio: Tensor) -> Tensor:
    """Per-pixel std (population, over the K sets) of the generated image, averaged over colour channels like ε (Eq. 2).

    first: (B, 3, H, W), the image generated with the first reference set; source: (B, 3, H, W) masked;
    references: (K − 1, B, 3R, H, W), the other sets; audio: (B, ...). One batch of (K − 1)·B frames. -> (B, 1, H, W)
    """
    others, b = references.shape[0], len(first)
    if others < 1 or references.shape[1] != b or len(source) != b or len(audio) != b:
        raise ValueError(f"need (K - 1 >= 1, {b}, 3R, H, W) reference sets for {b} frames, got {tuple(references.shape)} with {len(source)} sources, {len(audio)} audio windows")
    images = generator(source.repeat(others, 1, 1, 1), references.flatten(0, 1), audio.repeat(others, *[1] * (audio.dim() - 1))).image
    stacked = torch.cat([first.unsqueeze(0), images.view(others, *first.shape)])  # (K, B, 3, H, W)
    return stacked.std(dim=0, correction=0).mean(dim=1, keepdim=True)
