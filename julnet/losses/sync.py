"""Lip-sync losses: eq. 13 for the generator, and the contrastive loss that trains the SyncNet."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from julnet.face import crop_mouth
from julnet.models.syncnet import SyncNet


def mouth_clip(frames: Tensor, size: int) -> Tensor:
    """(B, T, 3, H, W) consecutive face crops -> (B, 3T, size, size) stacked mouth crops."""
    b, t = frames.shape[:2]
    mouths = crop_mouth(frames.flatten(0, 1), size)
    return mouths.view(b, t * 3, size, size)


def sync_loss(syncnet: SyncNet, audio: Tensor, frames: Tensor) -> Tensor:
    """Eq. 13: L_sync = E[(syncnet(A, I_gen) − 1)²] on the mouth crops of a 5-frame clip."""
    score = syncnet(audio, mouth_clip(frames, syncnet.mouth_size))
    return ((score.float() - 1) ** 2).mean()


def syncnet_contrastive_loss(syncnet: SyncNet, audio: Tensor, mouths: Tensor, in_sync: Tensor) -> Tensor:
    """Binary cross-entropy of the sync score against 1 for in-sync pairs and 0 for shifted ones."""
    return sync_score_bce(syncnet(audio, mouths), in_sync)


def sync_score_bce(score: Tensor, in_sync: Tensor) -> Tensor:
    """The contrastive loss on precomputed sync scores (so a trainer can also report the scores it used)."""
    return F.binary_cross_entropy(score.float().clamp(1e-6, 1 - 1e-6), in_sync.float())
