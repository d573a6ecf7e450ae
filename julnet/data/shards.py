"""Parquet shards of preprocessed frames: one row per frame, one row group per chunk of one video.

A row holds the JPEG face crop, its 68 landmarks in crop coordinates and the audio window centred on
the frame, so every row group is self-contained: references and clips never need another row group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from julnet import storage
from julnet.data.scenes import segment_ranges

COLUMNS = ("video_id", "frame_index", "timestamp", "jpeg", "landmarks", "audio")


def shard_schema(audio_dim: int, window: int) -> pa.Schema:
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("frame_index", pa.int32()),
            ("timestamp", pa.float64()),
            ("jpeg", pa.binary()),
            ("landmarks", pa.list_(pa.float32(), 136)),
            ("audio", pa.list_(pa.float32(), audio_dim * window)),
        ],
        metadata={"audio_dim": str(audio_dim), "audio_window": str(window)},
    )


@dataclass
class ProcessedVideo:
    """One video after preprocessing, ready to be written."""

    video_id: str
    jpegs: list[bytes]
    landmarks: np.ndarray  # (K, 68, 2) float32, crop pixel coordinates
    audio: np.ndarray  # (K, D, window) float32
    fps: float
    segments: list[int]  # first frame of each shot; no chunk crosses a scene cut

    def table(self, start: int, stop: int, schema: pa.Schema) -> pa.Table:
        k = stop - start
        return pa.Table.from_pydict(
            {
                "video_id": [self.video_id] * k,
                "frame_index": np.arange(start, stop, dtype=np.int32),
                "timestamp": np.arange(start, stop, dtype=np.float64) / self.fps,
                "jpeg": self.jpegs[start:stop],
                "landmarks": pa.FixedSizeListArray.from_arrays(self.landmarks[start:stop].reshape(-1).astype(np.float32), 136),
                "audio": pa.FixedSizeListArray.from_arrays(
                    self.audio[start:stop].reshape(-1).astype(np.float32), self.audio.shape[1] * self.audio.shape[2]
                ),
            },
            schema=schema,
        )


def chunk_ranges(frames: int, segments: Sequence[int], chunk_frames: int) -> list[range]:
    """The frames of each row group: every shot (from its first frame in `segments`) cut into chunks of at most
    `chunk_frames`, so references, which come from a target's chunk, never come from another shot."""
    return [
        range(start, min(start + chunk_frames, shot.stop))
        for shot in segment_ranges(segments, frames)
        for start in range(shot.start, shot.stop, chunk_frames)
    ]


def write_shard(uri: str, videos: Iterable[ProcessedVideo], schema: pa.Schema, chunk_frames: int) -> dict[str, list[int]]:
    """Write videos as row groups (`chunk_ranges`); returns each video's row groups.

    The file appears under `uri` only once complete (storage.open_output is atomic).
    """
    groups: dict[str, list[int]] = {}
    index = 0
    with storage.open_output(uri) as sink, pq.ParquetWriter(sink, schema, compression="none") as writer:
        for video in videos:
            groups[video.video_id] = []
            for chunk in chunk_ranges(len(video.jpegs), video.segments, chunk_frames):
                start, stop = chunk.start, chunk.stop
                writer.write_table(video.table(start, stop, schema), row_group_size=stop - start)
                groups[video.video_id].append(index)
                index += 1
    return groups


def read_row_group(uri: str, row_group: int, columns: Iterable[str] = COLUMNS) -> pa.Table:
    """One chunk of one video from a shard on any storage."""
    with storage.open_input(uri) as stream:
        return pq.ParquetFile(stream).read_row_group(row_group, columns=list(columns))
