"""Deterministic synthetic talking faces, so the whole method runs with no data at all.

Each example is a cartoon face whose mouth opening follows the audio features (a fixed linear code
plus noise), so there is something to learn: the mouth can be recovered from audio and references.
Batch `i` depends only on (seed, i), which makes resumed runs reproduce uninterrupted ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from julnet.config import Config, StageConfig
from julnet.data.examples import target_span
from julnet.face import mask_mouth, mouth_box


class SyntheticFaces:
    def __init__(self, cfg: Config, stage: StageConfig, seed: int = 0):
        self.stage, self.seed = stage, seed
        self.window, self.refs, self.dim = cfg.audio.window, cfg.generator.num_references, cfg.audio.dim
        self.code = torch.randn(self.dim, generator=torch.Generator().manual_seed(1234))

    def batch(self, index: int) -> dict[str, Tensor]:
        """Frame stage: target/source (B,3,H,W), references (B,3R,H,W), audio (B,D,window).
        Clip stage: target/source (B,T,3,H,W), audio (B,T,D,window) with T = window."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        b, clip = self.stage.batch_size, self.stage.kind == "clip"
        t = target_span(self.stage, self.window)
        span = t + self.window - 1
        openings = torch.rand(b, span, generator=g)
        audio_rows = openings[..., None] * self.code + 0.1 * torch.randn(b, span, self.dim, generator=g)
        windows = audio_rows.unfold(1, self.window, 1)  # (B, t, D, window)
        identity = self._identities(b, g)
        centre = openings[:, self.window // 2 : self.window // 2 + t]
        target = self._paint(identity, centre)
        ref_open = torch.rand(b, self.refs, generator=g)
        references = self._paint(identity, ref_open).flatten(1, 2)
        example = {"target": target, "source": mask_mouth(target), "references": references, "audio": windows}
        if not clip:
            example = {k: v.squeeze(1) if k != "references" else v for k, v in example.items()}
        return example

    @staticmethod
    def _identities(b: int, g: torch.Generator) -> dict[str, Tensor]:
        return {
            "skin": 0.45 + 0.4 * torch.rand(b, 3, generator=g),
            "background": torch.rand(b, 3, generator=g),
            "lips": torch.tensor([0.55, 0.15, 0.2]) + 0.15 * torch.rand(b, 3, generator=g),
            "shift": 0.06 * (torch.rand(b, 2, generator=g) - 0.5),
        }

    def _paint(self, identity: dict[str, Tensor], openings: Tensor) -> Tensor:
        """(B, K) mouth openings in [0, 1] -> (B, K, 3, H, W) faces with soft edges."""
        h, w = self.stage.height, self.stage.width
        y = torch.linspace(0, 1, h).view(1, 1, h, 1)
        x = torch.linspace(0, 1, w).view(1, 1, 1, w)
        dy = identity["shift"][:, 0].view(-1, 1, 1, 1)
        dx = identity["shift"][:, 1].view(-1, 1, 1, 1)
        top, left, side = mouth_box(h, w)
        my, mx = (top + 0.6 * side) / h, (left + 0.5 * side) / w

        def ellipse(cy: float, cx: float, ry: Tensor | float, rx: float) -> Tensor:
            d = ((y - cy - dy) / ry) ** 2 + ((x - cx - dx) / rx) ** 2
            return torch.sigmoid((1 - d) * 12)

        face = ellipse(0.5, 0.5, 0.46, 0.42)
        eyes = ellipse(0.36, 0.33, 0.035, 0.05) + ellipse(0.36, 0.67, 0.035, 0.05)
        ry = (0.015 + 0.09 * openings)[..., None, None]
        mouth = ellipse(my, mx, ry, 0.17)
        lips = ellipse(my, mx, ry + 0.025, 0.2) - mouth
        shade = 1 - 0.25 * y
        img = identity["background"].view(-1, 1, 3, 1, 1) * (1 - face[:, :, None])
        img = img + (identity["skin"].view(-1, 1, 3, 1, 1) * shade[:, :, None]) * face[:, :, None]
        img = img * (1 - 0.8 * eyes[:, :, None])
        img = img * (1 - lips.clamp(0, 1)[:, :, None]) + identity["lips"].view(-1, 1, 3, 1, 1) * lips.clamp(0, 1)[:, :, None]
        img = img * (1 - 0.9 * mouth[:, :, None])
        return img.clamp(0, 1)
