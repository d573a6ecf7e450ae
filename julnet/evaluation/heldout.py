"""The held-out frames of a dataset, video by video in frame order, built the way training builds examples.

Each frame becomes the loader's example (target, source with the mouth zeroed, references from the same
chunk, the audio window centred on it), so a model is measured on the inputs it was trained on. References
are drawn as in training (`random`: other frames of the chunk with a face, never the target, seeded per chunk)
or fixed per chunk as `julnet generate` picks them (`even`, `first`, among the frames with a face): like
training, evaluation never takes a faceless frame as a reference. With `epistemic_samples` K >= 2, each frame
also gets K − 1 more reference sets for the epistemic map, drawn among the chunk's frames with a face.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from julnet.config import EvaluationConfig
from julnet.data.examples import draw_references
from julnet.data.loader import Unit, plan_units, read_chunk
from julnet.data.manifest import read_manifest
from julnet.data.references import reference_indices
from julnet.face import mask_mouth


@dataclass(frozen=True)
class VideoPlan:
    """One held-out video: its chunks in order and how many of its frames are evaluated."""

    video_id: str
    units: list[Unit]
    frames: int


@dataclass
class FrameBatch:
    """Consecutive frames of one video, as a loader batch: uint8 images and float32 audio windows, and which
    frames have the subject's landmarks (`usable`; the others are generated to keep the frames consecutive for LSE,
    and not scored)."""

    video_id: str
    first_frame: int
    batch: dict[str, Tensor]
    usable: Tensor  # (B,) bool
    resampled: Tensor | None = None  # (B, K − 1, 3R, H, W) uint8: the epistemic map's other reference sets, or None when off


def plan_videos(manifest_uri: str, settings: EvaluationConfig) -> list[VideoPlan]:
    """The split's videos in manifest order with their frame budgets (per-video and total limits applied)."""
    manifest = read_manifest(manifest_uri)
    units = plan_units(manifest_uri, settings.split, settings.split_by, seed=settings.seed)
    by_video: dict[str, list[Unit]] = {}
    for unit in units:
        by_video.setdefault(unit.video_id, []).append(unit)
    plans, left = [], settings.max_frames
    for video in manifest.split(settings.split, settings.split_by):
        frames = min(video.frames, settings.max_frames_per_video or video.frames, video.frames if left is None else left)
        if frames <= 0:
            break
        plans.append(VideoPlan(video.id, sorted(by_video[video.id], key=lambda u: u.row_group), frames))
        if left is not None:
            left -= frames
    return plans


def video_batches(plan: VideoPlan, settings: EvaluationConfig, size: tuple[int, int], num_references: int) -> Iterator[FrameBatch]:
    """The planned frames of one video in order, `settings.batch_size` at a time (a batch never spans chunks)."""
    done = 0
    for unit in plan.units:
        if done >= plan.frames:
            return
        frames, audio, usable = read_chunk(unit, *size)
        count = min(len(frames), plan.frames - done)
        # A chunk without a face has nothing to reference or score: its frames are only counted (zeros as references).
        faces = usable[:count].any()
        refs = reference_table(usable, count, num_references, settings.references, unit.seed) if faces else np.zeros((count, num_references), int)
        others = max(settings.epistemic_samples - 1, 0)
        extra = resampled_table(usable, count, num_references, others, unit.seed) if faces else np.zeros((count, others, num_references), int)
        chw = torch.from_numpy(np.ascontiguousarray(np.moveaxis(frames, -1, -3)))
        for start in range(0, count, settings.batch_size):
            rows = slice(start, min(start + settings.batch_size, count))
            target = chw[rows]
            batch = {
                "target": target,
                "source": mask_mouth(target),
                "references": chw[refs[rows]].flatten(1, 2),
                "audio": torch.tensor(audio[rows]),
            }
            resampled = chw[extra[rows]].flatten(2, 3) if others else None
            yield FrameBatch(plan.video_id, done + start, batch, torch.from_numpy(usable[rows].copy()), resampled)
        done += count


def reference_table(usable: np.ndarray, count: int, num_references: int, strategy: str, seed: int) -> np.ndarray:
    """(count, R) reference frame indices for the first `count` frames of a chunk, only frames with a face
    (`usable`, (K,) bool, as the loader reads it); ValueError when the chunk has no such frame to use."""
    if strategy == "random":
        rng = np.random.default_rng(seed)
        return np.stack([draw_references(rng, num_references, range(i, i + 1), len(usable), usable) for i in range(count)])
    if not usable.any():
        raise ValueError(f"a chunk of {len(usable)} frames has no frame with a face to use as a reference")
    fixed = reference_indices(usable.tolist(), num_references, strategy)
    return np.tile(np.asarray(fixed), (count, 1))


def resampled_table(usable: np.ndarray, count: int, num_references: int, sets: int, seed: int) -> np.ndarray:
    """(count, sets, R) more reference sets per frame for the epistemic map, among the chunk's frames with a face
    (the target may be one, as in `julnet generate`), from a stream of their own so the first set stays `reference_table`'s."""
    rng = np.random.default_rng([seed, 1])
    draws = [draw_references(rng, num_references, range(0), len(usable), usable) for _ in range(count * sets)]
    return np.asarray(draws, dtype=int).reshape(count, sets, num_references)
