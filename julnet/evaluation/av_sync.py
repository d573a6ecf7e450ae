"""The SyncNet scorers that preprocessing's AV-sync step is handed (`julnet.data.sync.SyncScorer`).

They live on the evaluation floor because the SyncNets do: the expert SyncNet (`evaluation.expert_syncnet`,
scored as syncnet_python does: `expert_frames`, `audio_mfcc`, `audio_windows`, `clip_count`) when configured,
else the project's own pre-trained SyncNet (`syncnet.weights`: mouths at the clip stage's resolution, as it was
trained, against the audio window of each clip's centre frame, as the own-SyncNet LSE is taken). Offsets and
confidence are `lse`'s. `load_scorer` returns Unavailable (why) when neither is configured; configured weights
that are missing raise MissingWeightsError.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from julnet.config import Config
from julnet.data.audio import frame_windows
from julnet.data.sync import SyncResult, SyncScorer
from julnet.evaluation.expert_syncnet import CLIP_FRAMES, ExpertSyncNet, audio_mfcc, audio_windows, clip_count, expert_frames, load_expert_syncnet
from julnet.evaluation.sync import lse
from julnet.evaluation.unavailable import Unavailable
from julnet.face import crop_mouth
from julnet.models.syncnet import SyncNet
from julnet.pretrained import load_into
from julnet.models.syncnet import clip_stage

BATCH = 32  # clips embedded at once: bounds memory on long videos


def _face(crop: np.ndarray) -> Tensor:
    """(1, 3, H, W) float in [0, 1] from an (H, W, 3) uint8 RGB crop."""
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float().div(255)


def _embed(embed: Callable[[Tensor], Tensor], clips: Callable[[int, int], Tensor], count: int) -> Tensor:
    """embed(clips(first, stop)) over clips 0..count−1, BATCH at a time, concatenated."""
    return torch.cat([embed(clips(i, min(i + BATCH, count))) for i in range(0, count, BATCH)])


def _result(video: Tensor, audio: Tensor, max_offset: int) -> SyncResult:
    """`lse` of one video's embeddings as a SyncResult."""
    result = lse(video, audio, max_offset)
    return SyncResult(offset=int(result["offset"]), confidence=float(result["lse_c"]), distance=float(result["lse_d"]))


class ExpertScorer:
    """syncnet_python's SyncNet: 224x224 BGR mouth regions against MFCC windows of the raw 16 kHz audio."""

    needs_samples = True

    def __init__(self, net: ExpertSyncNet, weights: str, min_confidence: float) -> None:
        self.net, self.name, self.min_confidence = net, f"expert SyncNet ({weights})", min_confidence

    def keep(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The crop's mouth region as the expert sees it: (3, 224, 224) uint8 BGR."""
        return expert_frames(_face(crop))[0].to(torch.uint8).numpy()

    @torch.no_grad()
    def score(self, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray, max_offset: int) -> SyncResult:
        """Offset and LSE-C over syncnet_python's clips; ValueError without audio samples or with too few frames."""
        if samples is None:
            raise ValueError("the expert SyncNet needs the video's audio samples")
        count = clip_count(len(kept), len(samples))
        if count == 0:
            raise ValueError(f"{len(kept)} frames are too few to measure sync")
        frames = torch.from_numpy(kept).float()
        window = torch.arange(CLIP_FRAMES)

        def clips(first: int, stop: int) -> Tensor:
            return frames[torch.arange(first, stop)[:, None] + window].permute(0, 2, 1, 3, 4)  # (n, 3, 5, 224, 224)

        video = _embed(self.net.embed_video, clips, count)
        return _result(video, self.net.embed_audio(audio_windows(audio_mfcc(samples), 0, count)), max_offset)


class OwnScorer:
    """The project's SyncNet: mouths of crops resized to the clip stage's resolution (as it was trained) against
    the audio window of each clip's centre frame."""

    needs_samples = False

    def __init__(self, net: SyncNet, size: tuple[int, int], window: int, weights: str, min_confidence: float) -> None:
        self.net, self.size, self.window = net, size, window
        self.name, self.min_confidence = f"own SyncNet ({weights})", min_confidence

    def keep(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The mouth of the crop at the clip stage's resolution: (3, m, m) uint8."""
        small = F.interpolate(_face(crop), size=self.size, mode="area")
        return crop_mouth(small, self.net.mouth_size)[0].mul(255).round().to(torch.uint8).numpy()

    @torch.no_grad()
    def score(self, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray, max_offset: int) -> SyncResult:
        """Offset and LSE-C over every `window`-frame clip; ValueError when the video is shorter than one clip."""
        count = len(kept) - self.window + 1
        if count <= 0:
            raise ValueError(f"{len(kept)} frames are too few to measure sync")
        mouths = torch.from_numpy(kept).float().div(255)
        window = torch.arange(self.window)

        def clips(first: int, stop: int) -> Tensor:
            return mouths[torch.arange(first, stop)[:, None] + window].flatten(1, 2)  # (n, 3*window, m, m)

        centre = self.window // 2
        audio = torch.from_numpy(frame_windows(rows, self.window)[centre : centre + count]).float()
        return _result(_embed(self.net.embed_face, clips, count), self.net.embed_audio(audio), max_offset)


def load_scorer(cfg: Config) -> SyncScorer | Unavailable:
    """The SyncNet that checks AV sync in preprocessing (the expert one, else the project's own), or why there is none."""
    p = cfg.preprocess
    if not p.av_sync:
        return Unavailable("preprocess.av_sync=false")
    expert = load_expert_syncnet(cfg.evaluation.expert_syncnet)
    if isinstance(expert, ExpertSyncNet):
        return ExpertScorer(expert, str(cfg.evaluation.expert_syncnet.path), p.min_sync_confidence)
    weights = cfg.syncnet.weights
    if weights.path is None:
        return Unavailable(f"{expert.reason}; the project's own SyncNet has no weights: set syncnet.weights.path")
    stage = clip_stage(cfg)
    net = load_into(SyncNet(cfg, cfg.audio.window), weights, "SyncNet", "syncnet.weights", cfg.tracking.uri)
    return OwnScorer(net, (stage.height, stage.width), cfg.audio.window, weights.path, p.min_sync_confidence_own)
