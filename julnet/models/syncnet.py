"""SyncNet (paper 3.4.4): do these 5 mouth crops and this audio window belong together?

Trained by this project contrastively on in-sync and shifted pairs, then frozen for eq. 13.
Embeddings are non-negative, so their cosine similarity is the sync score in [0, 1].
"""

from __future__ import annotations

import logging
import math

import torch.nn.functional as F
from torch import Tensor, nn

from julnet.config import Config, ConfigError, StageConfig
from julnet.models.blocks import ResBlock, down_block, same_block

log = logging.getLogger(__name__)

MIN_BATCH, ENLARGED_BATCH = 2, 8  # negatives take another clip's audio: at least 2 clips per batch


class SyncNet(nn.Module):
    def __init__(self, cfg: Config, frames: int = 5):
        super().__init__()
        s = cfg.syncnet
        levels = int(math.log2(s.mouth_size)) - 2
        widths = [min(s.embed_dim, s.base_channels * 2**i) for i in range(levels + 1)]
        face: list[nn.Module] = [same_block(2, 3 * frames, widths[0], 7)]
        face += [down_block(2, cin, cout, pooled=True) for cin, cout in zip(widths, widths[1:])]
        face += [nn.Conv2d(widths[-1], s.embed_dim, 4, padding=0)]
        self.face_encoder = nn.Sequential(*face)
        audio_width = min(s.embed_dim, s.base_channels * 8)
        self.audio_encoder = nn.Sequential(
            same_block(1, cfg.audio.dim, audio_width, 3),
            ResBlock(1, audio_width),
            same_block(1, audio_width, audio_width, 3),
            ResBlock(1, audio_width),
            nn.Conv1d(audio_width, s.embed_dim, 1),
        )
        self.mouth_size = s.mouth_size

    def embed_face(self, mouths: Tensor) -> Tensor:
        """(B, 3*frames, m, m) mouth crops -> unit-length non-negative embedding."""
        return F.normalize(F.relu(self.face_encoder(mouths).mean(dim=(2, 3))), dim=1, eps=1e-6)

    def embed_audio(self, audio: Tensor) -> Tensor:
        """(B, D, window) audio features -> unit-length non-negative embedding."""
        return F.normalize(F.relu(self.audio_encoder(audio).mean(dim=2)), dim=1, eps=1e-6)

    def forward(self, audio: Tensor, mouths: Tensor) -> Tensor:
        """Sync score in [0, 1] per example."""
        return (self.embed_audio(audio) * self.embed_face(mouths)).sum(dim=1).clamp(0.0, 1.0)


def clip_stage(cfg: Config) -> StageConfig:
    """The config's clip stage, with at least 2 clips per batch (enlarged to 8 when smaller)."""
    stage = next((s for s in cfg.train.stages if s.kind == "clip"), None)
    if stage is None:
        raise ConfigError("train.stages: SyncNet pre-training needs a stage with kind: clip")
    if stage.batch_size < MIN_BATCH:
        log.info("[syncnet] stage %s has batch_size %d < %d: using %d clips per batch", stage.name, stage.batch_size, MIN_BATCH, ENLARGED_BATCH)
        stage = stage.model_copy(update={"batch_size": ENLARGED_BATCH})
    return stage
