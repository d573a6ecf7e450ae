"""A training or evaluation batch as single frames on the device: what the generator, the losses and the suite read."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from julnet.config import StageKind


@dataclass
class Frames:
    """A batch flattened to single frames; `clip_len` > 1 when consecutive frames form clips."""

    target: Tensor  # (N, 3, H, W)
    source: Tensor  # (N, 3, H, W)
    references: Tensor  # (N, 3R, H, W)
    audio: Tensor  # (N, D, window)
    clip_len: int
    clip_audio: Tensor | None  # (N / clip_len, D, window): the window covering each clip

    def clips(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N / clip_len, clip_len, 3, H, W)."""
        return frames.view(-1, self.clip_len, *frames.shape[1:])


def _on_device(x: Tensor, device: torch.device) -> Tensor:
    x = x.to(device, non_blocking=True)  # asynchronous from pinned memory (the loaders pin on CUDA)
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def flatten_batch(
    batch: dict[str, Tensor], kind: StageKind, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
) -> Frames:
    """Frame batches pass through; clip batches (B, T, ...) become B*T frames sharing references.

    uint8 images (as the data loader ships them) become floats in [0, 1] here, on the device, in `memory_format`.
    """
    b = {k: _on_device(v, device) for k, v in batch.items()}
    if kind == "frame":
        frames = Frames(b["target"], b["source"], b["references"], b["audio"], 1, None)
    else:
        t = b["target"].shape[1]
        frames = Frames(
            target=b["target"].flatten(0, 1),
            source=b["source"].flatten(0, 1),
            references=b["references"].repeat_interleave(t, dim=0),
            audio=b["audio"].flatten(0, 1),
            clip_len=t,
            clip_audio=b["audio"][:, t // 2],
        )
    if memory_format != torch.contiguous_format:
        for name in ("target", "source", "references"):
            setattr(frames, name, getattr(frames, name).contiguous(memory_format=memory_format))
    return frames
