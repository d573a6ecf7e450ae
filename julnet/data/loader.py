"""Training examples from a preprocessed dataset, as a Ray Dataset or a plain iterator (same code path).

A chunk is one row group: up to `chunk_frames` frames of one video. Each chunk is read, decoded once at the stage's
resolution and turned into examples by `chunk_examples`; references always come from the same chunk. The unit of
work is a group of `mix` chunks whose examples are interleaved at random, so that a batch holds frames of several
videos: batch after batch of one video's neighbouring frames makes the generator chase that video and forget the
others (a spike in the loss each time the video changes). Everything random derives from (seed, epoch, chunk), so
a fixed seed gives identical examples.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from julnet.config import StageConfig, TrainConfig
from julnet.data.examples import chunk_examples, count_examples, decode_frames
from julnet.data.manifest import Split, manifest_root, read_manifest
from julnet.data.shards import chunk_ranges, read_row_group

if TYPE_CHECKING:
    import ray.data

# Column dtypes as torch sees them; iter_torch_batches needs every column named.
TORCH_DTYPES = {"target": torch.uint8, "source": torch.uint8, "references": torch.uint8, "audio": torch.float32}


# Chunks whose examples are interleaved, train.mix_chunks's default: each holds one decoded chunk in memory while it
# is drawn from (250 frames at 416x320 are 100 MB).
MIX_CHUNKS: int = TrainConfig.model_fields["mix_chunks"].default


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


def examples_per_epoch(manifest_uri: str, stage: StageConfig, window: int, split: Split = "train") -> int:
    """How many examples one epoch of a split yields at this stage: targets (frames, or clips) with faces, chunk by
    chunk (`count_examples` on the manifest's faceless frames, as the loader applies it to the landmarks)."""
    manifest = read_manifest(manifest_uri)
    total = 0
    for v in manifest.split(split):
        usable = np.ones(v.frames, dtype=bool)
        usable[v.faceless_frames] = False
        total += sum(count_examples(usable[c.start : c.stop], stage, window) for c in chunk_ranges(v.frames, v.segments, manifest.settings["chunk_frames"]))
    return total


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


def read_unit(unit: Unit, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One chunk in frame order: (K, H, W, 3) uint8 crops decoded at this size and (K, D, window) audio windows."""
    frames, audio, _ = read_chunk(unit, height, width)
    return frames, audio


def read_chunk(unit: Unit, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """read_unit's crops and audio, and (K,) bool: the frame has the subject's landmarks (NaN rows have none)."""
    table = read_row_group(unit.shard, unit.row_group, ["jpeg", "audio", "landmarks"])
    frames = decode_frames(table.column("jpeg").to_pylist(), (unit.stored_height, unit.stored_width), (height, width))
    audio = table.column("audio").combine_chunks().flatten().to_numpy().reshape(len(frames), unit.audio_dim, unit.window)
    landmarks = table.column("landmarks").combine_chunks().flatten().to_numpy().reshape(len(frames), -1)
    return frames, audio, ~np.isnan(landmarks).any(axis=1)


def interleave(streams: list[Iterator[Any]], lengths: list[int], rng: np.random.Generator) -> Iterator[Any]:
    """Every item of every stream, streams drawn at random in proportion to what each has left (each stream's own
    order kept), so that any stretch of the output is a uniform mix of the streams. `lengths` are the streams' sizes."""
    left = np.array(lengths, dtype=np.int64)
    while left.sum() > 0:
        k = int(rng.choice(len(streams), p=left / left.sum()))
        left[k] -= 1
        yield next(streams[k])


def group_examples(units: list[Unit], stage: StageConfig, num_references: int) -> Iterator[dict[str, np.ndarray]]:
    """Read and decode a group of chunks at the stage's resolution and yield their examples interleaved at random."""
    streams, lengths = [], []
    for unit in units:
        frames, audio, usable = read_chunk(unit, stage.height, stage.width)
        streams.append(chunk_examples(frames, audio, usable, stage, num_references, np.random.default_rng(unit.seed)))
        lengths.append(count_examples(usable, stage, unit.window))
    yield from interleave(streams, lengths, np.random.default_rng([u.seed for u in units]))


def plan_groups(
    manifest_uri: str, split: Split = "train", seed: int = 0, epoch: int = 0, mix: int = MIX_CHUNKS
) -> list[list[Unit]]:
    """The epoch's shuffled chunks (plan_units) in consecutive groups of `mix`, the last one possibly smaller."""
    if mix < 1:
        raise ValueError(f"mix_chunks must be at least 1, got {mix}")
    units = plan_units(manifest_uri, split, seed=seed, epoch=epoch)
    return [units[i : i + mix] for i in range(0, len(units), mix)]


def iter_examples(
    manifest_uri: str, stage: StageConfig, num_references: int, split: Split = "train", seed: int = 0, epoch: int = 0,
    mix: int = MIX_CHUNKS,
) -> Iterator[dict[str, np.ndarray]]:
    """Examples of one epoch without Ray (unit tests, the single-process loop)."""
    for group in plan_groups(manifest_uri, split, seed, epoch, mix):
        yield from group_examples(group, stage, num_references)


class StepBatches:
    """`batches(step)` for the single-process loop: epochs in order, batch k of an epoch always the same,
    so a run resumed at any step sees exactly the batches an unbroken run would."""

    def __init__(
        self, manifest_uri: str, stage: StageConfig, num_references: int, window: int, seed: int = 0, pin_memory: bool = False,
        mix: int = MIX_CHUNKS,
    ):
        """`pin_memory`: batches in page-locked memory, for asynchronous copies to a CUDA device."""
        self.manifest_uri, self.stage, self.num_references, self.seed = manifest_uri, stage, num_references, seed
        self.pin_memory, self.mix = pin_memory, mix
        self.per_epoch = examples_per_epoch(manifest_uri, stage, window) // stage.batch_size
        if self.per_epoch == 0:
            raise ValueError(f"{manifest_uri}: one epoch holds fewer examples than a batch of {stage.batch_size}")
        self._next_step, self._batches = 0, iter(())

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(step - 1, self.per_epoch)
        if step != self._next_step:
            self._batches = self._epoch(epoch)
            for _ in range(index):
                next(self._batches)
        self._next_step = step + 1 if index + 1 < self.per_epoch else -1
        return next(self._batches)

    def _epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        examples = iter_examples(self.manifest_uri, self.stage, self.num_references, seed=self.seed, epoch=epoch, mix=self.mix)
        for _ in range(self.per_epoch):
            yield collate([next(examples) for _ in range(self.stage.batch_size)], self.pin_memory)


def collate(examples: list[dict[str, np.ndarray]], pin_memory: bool = False) -> dict[str, torch.Tensor]:
    """Stack examples into a batch of tensors; with `pin_memory`, stacked straight into page-locked memory."""
    if pin_memory:
        return {k: _stack_into_new([e[k] for e in examples], pin_memory=True) for k in TORCH_DTYPES}
    return {k: torch.from_numpy(np.stack([e[k] for e in examples])) for k in TORCH_DTYPES}


def _stack_into_new(arrays: list[np.ndarray], pin_memory: bool) -> torch.Tensor:
    """np.stack written straight into a new tensor (page-locked with `pin_memory`, which needs CUDA)."""
    first = np.asarray(arrays[0])
    dtype = torch.from_numpy(first.reshape(-1)[:0]).dtype
    out = torch.empty((len(arrays), *first.shape), dtype=dtype, pin_memory=pin_memory)
    np.stack(arrays, out=out.numpy())
    return out


def examples_dataset(
    manifest_uri: str,
    stage: StageConfig,
    num_references: int,
    split: Split = "train",
    seed: int = 0,
    epochs: Iterable[int] = (0,),
    mix: int = MIX_CHUNKS,
) -> ray.data.Dataset:
    """The same examples as a streaming Ray Dataset over the given epochs: one read-decode-interleave task per
    group of chunks, order preserved."""
    import ray.data

    groups = [g for epoch in epochs for g in plan_groups(manifest_uri, split, seed, epoch, mix)]
    ds = ray.data.from_items([{"units": [asdict(u) for u in g]} for g in groups], override_num_blocks=len(groups))

    def expand(row: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        yield from group_examples([Unit(**u) for u in row["units"]], stage, num_references)

    ds = ds.flat_map(expand)
    ds.context.execution_options.preserve_order = True
    return ds
