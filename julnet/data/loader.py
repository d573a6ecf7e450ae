"""Training examples from a preprocessed dataset, as a Ray Dataset or a plain iterator (same code path).

The unit of work is one row group: a chunk of one video. Each unit is read, decoded once at the stage's
resolution and turned into examples by `chunk_examples`; references always come from the same chunk.
Everything random derives from (seed, epoch, unit), so a fixed seed gives identical examples.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from julnet.config import StageConfig
from julnet.data.examples import chunk_examples, decode_frames
from julnet.data.manifest import Split, manifest_root, read_manifest
from julnet.data.shards import read_row_group

if TYPE_CHECKING:
    import ray.data

# Column dtypes as torch sees them; iter_torch_batches needs every column named.
TORCH_DTYPES = {"target": torch.uint8, "source": torch.uint8, "references": torch.uint8, "audio": torch.float32}


@dataclass(frozen=True)
class Unit:
    """One chunk of one video and the seed its examples are drawn with."""

    shard: str
    row_group: int
    video_id: str
    seed: int
    stored_height: int
    stored_width: int
    audio_dim: int
    window: int


def plan_units(
    manifest_uri: str, split: Split = "train", by: Literal["video", "identity"] = "video", seed: int = 0, epoch: int = 0
) -> list[Unit]:
    """All chunks of a split in a shuffled order fixed by (seed, epoch)."""
    manifest = read_manifest(manifest_uri)
    root = manifest_root(manifest_uri)
    s = manifest.settings
    units = [
        (manifest.shard_uri(root, v.shard), group, v.id)
        for v in manifest.split(split, by)
        for group in v.row_groups
    ]
    if not units:
        raise ValueError(f"{manifest_uri}: split {split!r} (by {by}) has no videos")
    rng = random.Random(f"{seed}/{epoch}")
    rng.shuffle(units)
    return [
        Unit(shard, group, vid, rng.getrandbits(63), s["crop_height"], s["crop_width"], s["audio_dim"], s["audio_window"])
        for shard, group, vid in units
    ]


def unit_examples(unit: Unit, stage: StageConfig, num_references: int) -> Iterator[dict[str, np.ndarray]]:
    """Read, decode and expand one chunk into examples at the stage's resolution."""
    table = read_row_group(unit.shard, unit.row_group, ["jpeg", "audio"])
    frames = decode_frames(table.column("jpeg").to_pylist(), (unit.stored_height, unit.stored_width), (stage.height, stage.width))
    audio = table.column("audio").combine_chunks().flatten().to_numpy().reshape(len(frames), unit.audio_dim, unit.window)
    yield from chunk_examples(frames, audio, stage, num_references, np.random.default_rng(unit.seed))


def iter_examples(
    manifest_uri: str, stage: StageConfig, num_references: int, split: Split = "train", seed: int = 0, epoch: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Examples of one epoch without Ray (unit tests, the single-process loop)."""
    for unit in plan_units(manifest_uri, split, seed=seed, epoch=epoch):
        yield from unit_examples(unit, stage, num_references)


def collate(examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack examples into a batch of tensors."""
    return {k: torch.from_numpy(np.stack([e[k] for e in examples])) for k in TORCH_DTYPES}


def examples_dataset(
    manifest_uri: str, stage: StageConfig, num_references: int, split: Split = "train", seed: int = 0, epoch: int = 0
) -> ray.data.Dataset:
    """The same examples as a streaming Ray Dataset: one read-and-decode task per chunk, order preserved."""
    import ray.data

    units = plan_units(manifest_uri, split, seed=seed, epoch=epoch)
    ds = ray.data.from_items([asdict(u) for u in units], override_num_blocks=len(units))

    def expand(row: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        yield from unit_examples(Unit(**row), stage, num_references)

    ds = ds.flat_map(expand)
    ds.context.execution_options.preserve_order = True
    return ds
