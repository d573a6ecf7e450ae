"""Audio-video sync of training videos: a SyncNet's offset and confidence per video, the audio shifted to match.

The SyncNets live on floors above the data code (julnet.models, julnet.evaluation), so preprocessing is handed a
`SyncScorer` (`julnet.data.preprocess.run(..., scorer=...)`): the expert SyncNet when configured, else the project's
own, scoring as syncnet_python does (LSE over ±`preprocess.max_av_offset` frames; confidence = LSE-C in the
scorer's units). Given none, or with `preprocess.av_sync=false`, the step is skipped and the manifest's
`settings.av_sync` says why: never a silent fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from julnet.config import Config

NO_SCORER = "no SyncNet configured (set evaluation.expert_syncnet.path for the expert, or syncnet.weights.path for the project's own)"


@dataclass(frozen=True)
class SyncResult:
    """A video's audio offset in frames (audio at frame i − offset matches video frame i), its LSE-C and LSE-D."""

    offset: int
    confidence: float
    distance: float


class SyncScorer(Protocol):
    """A SyncNet as preprocessing uses it: it keeps a small part of each crop, then scores the whole video."""

    name: str  # recorded in the manifest, e.g. "expert SyncNet (/path/syncnet_v2.model)"
    min_confidence: float  # LSE-C below this rejects the video as out_of_sync
    needs_samples: bool  # whether `score` wants the raw 16 kHz audio (else the per-frame feature rows suffice)

    def keep(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        """What the scorer needs of one (H, W, 3) uint8 face crop with its (68, 2) crop landmarks (NaN: no face)."""
        ...

    def score(self, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray, max_offset: int) -> SyncResult:
        """Offset within ±max_offset frames and confidence of one video; ValueError when it is too short to score."""
        ...


def describe(cfg: Config, scorer: SyncScorer | None) -> str:
    """What the manifest records about the sync step: the scorer and its limits, or 'skipped: why'."""
    p = cfg.preprocess
    if not p.av_sync:
        return "skipped: preprocess.av_sync=false"
    if scorer is None:
        return f"skipped: {NO_SCORER}"
    return f"{scorer.name}, max offset {p.max_av_offset} frames, min LSE-C {scorer.min_confidence}"


def active(cfg: Config, scorer: SyncScorer | None) -> SyncScorer | None:
    """The scorer when the sync step runs, else None."""
    return scorer if cfg.preprocess.av_sync else None


def shift_rows(rows: np.ndarray, offset: int) -> np.ndarray:
    """Per-frame audio rows moved `offset` frames later (row i becomes row i − offset), edges replicated."""
    index = np.clip(np.arange(len(rows)) - offset, 0, len(rows) - 1)
    return rows[index]
