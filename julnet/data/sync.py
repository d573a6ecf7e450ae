"""Audio-video sync of training videos: a SyncNet's offset and confidence per video, the audio shifted to match.

The SyncNet is the expert one (syncnet_python's, `evaluation.expert_syncnet`) when configured, else the
project's own pre-trained one (`syncnet.weights`). Offsets and confidence are LSE's (`julnet.evaluation.sync.lse`,
syncnet_python's procedure) over ±`preprocess.max_av_offset` frames: the confidence is LSE-C, in the scorer's units.
With neither SyncNet configured, or `preprocess.av_sync=false`, the step is skipped and `describe` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from julnet.config import Config
from julnet.data.audio import frame_windows
from julnet.evaluation.expert_syncnet import CLIP_FRAMES, ExpertSyncNet, audio_mfcc, audio_windows, clip_count, expert_frames, load_expert_syncnet
from julnet.evaluation.sync import lse
from julnet.evaluation.unavailable import Unavailable
from julnet.face import crop_mouth
from julnet.models.syncnet import SyncNet
from julnet.pretrained import load_into

BATCH = 32  # clips embedded at once: bounds memory on long videos
NO_WEIGHTS = "no SyncNet weights: set evaluation.expert_syncnet.path or syncnet.weights.path"


@dataclass(frozen=True)
class SyncResult:
    """A video's audio offset in frames (audio at frame i − offset matches video frame i) and its LSE-C / LSE-D."""

    offset: int
    confidence: float
    distance: float


class SyncScorer(Protocol):
    """A SyncNet as preprocessing uses it: it keeps a small part of each crop, then embeds 5-frame clips and audio."""

    name: str
    min_confidence: float

    def keep(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        """What the scorer needs of one (H, W, 3) uint8 face crop with its (68, 2) crop landmarks (NaN: no face)."""
        ...

    def embeddings(self, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        """(T, D) video and audio embeddings; video i covers frames i..i+4, audio i the audio that belongs with them."""
        ...


class ExpertScorer:
    """syncnet_python's SyncNet: mouth regions at 224x224 BGR against MFCC windows of the raw 16 kHz audio."""

    def __init__(self, net: ExpertSyncNet, weights: str, min_confidence: float):
        self.net, self.name, self.min_confidence = net, f"expert SyncNet ({weights})", min_confidence

    def keep(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        face = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255)
        return expert_frames(face)[0].to(torch.uint8).numpy()

    @torch.no_grad()
    def embeddings(self, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        if samples is None:
            raise ValueError("the expert SyncNet needs the video's audio samples")
        count = clip_count(len(kept), len(samples))
        frames = torch.from_numpy(kept).float()
        clips = (frames[i : i + CLIP_FRAMES].permute(1, 0, 2, 3)[None] for i in range(count))
        video = _batched(self.net.embed_video, clips)
        audio = self.net.embed_audio(audio_windows(audio_mfcc(samples), 0, count)) if count else torch.zeros(0, 1)
        return video, audio


class OwnScorer:
    """The project's SyncNet: mouths of crops at the clip stage's resolution (as it was trained) against the
    shards' audio window of each clip's centre frame."""

    def __init__(self, net: SyncNet, size: tuple[int, int], window: int, weights: str, min_confidence: float):
        self.net, self.size, self.window = net, size, window
        self.name, self.min_confidence = f"own SyncNet ({weights})", min_confidence

    def keep(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        face = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255)
        small = torch.nn.functional.interpolate(face, size=self.size, mode="area")
        return crop_mouth(small, self.net.mouth_size)[0].mul(255).round().to(torch.uint8).numpy()

    @torch.no_grad()
    def embeddings(self, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray) -> tuple[Tensor, Tensor]:
        mouths = torch.from_numpy(kept).float().div(255)
        count = max(0, len(mouths) - self.window + 1)
        clips = (mouths[i : i + self.window].flatten(0, 1)[None] for i in range(count))
        windows = torch.from_numpy(frame_windows(rows, self.window))[self.window // 2 : self.window // 2 + count]
        return _batched(self.net.embed_face, clips), self.net.embed_audio(windows.float())


def _batched(embed: Callable[[Tensor], Tensor], clips: Iterable[Tensor]) -> Tensor:
    """embed(stack of clips) over an iterator of (1, ...) clips, BATCH at a time."""
    out, batch = [], []
    for clip in [*clips, None]:
        if clip is not None:
            batch.append(clip)
        if batch and (clip is None or len(batch) == BATCH):
            out.append(embed(torch.cat(batch)))
            batch = []
    return torch.cat(out) if out else torch.zeros(0, 1)


def load_scorer(cfg: Config) -> SyncScorer | Unavailable:
    """The SyncNet that checks sync in preprocessing (expert, else own), or why the step is skipped."""
    p = cfg.preprocess
    if not p.av_sync:
        return Unavailable("preprocess.av_sync=false")
    expert = load_expert_syncnet(cfg.evaluation.expert_syncnet)
    if isinstance(expert, ExpertSyncNet):
        return ExpertScorer(expert, str(cfg.evaluation.expert_syncnet.path), p.min_sync_confidence)
    if cfg.syncnet.weights.path is None:
        return Unavailable(NO_WEIGHTS)
    from julnet.training.syncnet import clip_stage  # lazy: julnet.training imports the data loader

    stage = clip_stage(cfg)
    net = load_into(SyncNet(cfg, cfg.audio.window), cfg.syncnet.weights, "SyncNet", "syncnet.weights", cfg.tracking.uri)
    return OwnScorer(net, (stage.height, stage.width), cfg.audio.window, cfg.syncnet.weights.path, p.min_sync_confidence_own)


def describe(cfg: Config) -> str:
    """What the manifest records about the sync step, from the config alone: the scorer, or 'skipped: why'."""
    p = cfg.preprocess
    if not p.av_sync:
        return "skipped: preprocess.av_sync=false"
    if cfg.evaluation.expert_syncnet.path is not None:
        return f"expert SyncNet ({cfg.evaluation.expert_syncnet.path}), max offset {p.max_av_offset}, min LSE-C {p.min_sync_confidence}"
    if cfg.syncnet.weights.path is not None:
        return f"own SyncNet ({cfg.syncnet.weights.path}), max offset {p.max_av_offset}, min LSE-C {p.min_sync_confidence_own}"
    return f"skipped: {NO_WEIGHTS}"


def measure(scorer: SyncScorer, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray, max_offset: int) -> SyncResult:
    """Offset and confidence of one video (LSE over ±max_offset frames); ValueError when it is too short to score."""
    video, audio = scorer.embeddings(kept, samples, rows)
    if len(video) == 0:
        raise ValueError(f"{len(kept)} frames are too few to measure sync")
    result = lse(video, audio, max_offset)
    return SyncResult(offset=int(result["offset"]), confidence=float(result["lse_c"]), distance=float(result["lse_d"]))


def shift_rows(rows: np.ndarray, offset: int) -> np.ndarray:
    """Per-frame audio rows moved `offset` frames later (row i becomes row i − offset), edges replicated."""
    index = np.clip(np.arange(len(rows)) - offset, 0, len(rows) - 1)
    return rows[index]

