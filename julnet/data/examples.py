"""Training examples from one chunk of one video: the single path used with Ray Data and without it.

Images stay uint8 (channels first) until they reach the trainer, which keeps the data pipeline light;
the training step converts them to [0, 1] floats.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from julnet.config import StageConfig
from julnet.face import mask_mouth

_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_frames(jpegs: list[bytes], stored: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """JPEG crops stored at `stored` (H, W) -> (K, H, W, 3) uint8 RGB at `size`.

    When `size` divides the stored size by 2, 4 or 8, libjpeg decodes at that scale directly (DCT scaling),
    which is several times faster than decoding at full size and resizing.
    """
    (sh, sw), (h, w) = stored, size
    factor = sh // h if sh % h == 0 and sw % w == 0 and sh // h == sw // w else 1
    flag = _REDUCED.get(factor, cv2.IMREAD_COLOR)
    out = np.empty((len(jpegs), h, w, 3), np.uint8)
    for i, data in enumerate(jpegs):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if img is None:
            raise ValueError(f"frame {i}: not a decodable JPEG")
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def _chw(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) -> (..., 3, H, W), contiguous."""
    return np.ascontiguousarray(np.moveaxis(frames, -1, -3))


def target_span(stage: StageConfig, window: int) -> int:
    """Frames per target: one (frame stage), or a clip of `window` frames, the audio window (clip stage)."""
    return window if stage.kind == "clip" else 1


def count_examples(usable: np.ndarray, stage: StageConfig, window: int) -> int:
    """How many examples `chunk_examples` yields for a chunk whose frames with a face are `usable` (K,) bool."""
    return len(target_starts(usable, target_span(stage, window)))


def target_starts(usable: np.ndarray, span: int) -> np.ndarray:
    """First frames of the chunk's targets: every non-overlapping run of `span` frames (from frame 0) whose frames
    all have a face, and only when some other frame with a face is left to be a reference.

    `usable` (K,) bool: the frame has the subject's landmarks. The loader and its example count both use this.
    """
    starts = np.arange(0, len(usable) - span + 1, span)
    complete = np.array([usable[s : s + span].all() for s in starts], dtype=bool)
    has_reference = np.array([usable.sum() - usable[s : s + span].sum() > 0 for s in starts], dtype=bool)
    return starts[complete & has_reference] if len(starts) else starts


def draw_references(rng: np.random.Generator, count: int, exclude: range, k: int, usable: np.ndarray | None = None) -> np.ndarray:
    """`count` indices of the chunk's k frames outside `exclude`, only frames with a face when `usable` (K,) bool
    says which (with replacement only if too few exist)."""
    candidates = np.arange(k) if usable is None else np.flatnonzero(usable)
    pool = np.setdiff1d(candidates, np.arange(exclude.start, exclude.stop))
    if len(pool) == 0:
        raise ValueError(f"a chunk of {k} frames has no frame with a face outside the target to use as a reference")
    return rng.choice(pool, size=count, replace=len(pool) < count)


def chunk_examples(
    frames: np.ndarray, audio: np.ndarray, usable: np.ndarray, stage: StageConfig, num_references: int, rng: np.random.Generator
) -> Iterator[dict[str, np.ndarray]]:
    """Examples of one chunk in random order: every frame with a face a target once (frame stage), or every
    non-overlapping run of `window` frames with faces a clip once (clip stage, window = audio window).

    frames: (K, H, W, 3) uint8; audio: (K, D, window) float32, the window centred on each frame; usable: (K,)
    bool, the frame has the subject's landmarks (faceless frames are never a target or a reference).
    """
    window = audio.shape[-1]
    chw = _chw(frames)
    clip = stage.kind == "clip"
    span = target_span(stage, window)
    for start in rng.permutation(target_starts(usable, span)):
        targets = range(int(start), int(start) + span)
        refs = draw_references(rng, num_references, targets, len(usable), usable)
        target = chw[targets.start : targets.stop] if clip else chw[targets.start]
        yield {
            "target": target,
            "source": mask_mouth(target),
            "references": chw[refs].reshape(-1, *chw.shape[-2:]),
            "audio": audio[targets.start : targets.stop] if clip else audio[targets.start],
        }
