"""The dataset manifest: which videos made it into which shards, their splits, and how they were made.

The manifest is written last, after every shard it names is complete, so it is the commit point of a
preprocessing run. Shard names are relative to the manifest, so a dataset can be copied as a folder.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict

from julnet import storage

FORMAT_VERSION = 2  # 2: faceless_frames, segments, av_offset, sync_confidence per video
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"
Split = Literal["train", "val", "test"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoStats(_Model):
    """What preprocessing learned about one accepted video."""

    id: str
    source: str
    identity: str
    frames: int
    fps: float
    duration: float
    source_fps: float
    source_size: tuple[int, int]  # width, height as stored in the file
    rotation: int
    fixes: list[str]  # what was corrected on the way in: resampled_fps, rotated, multiple_faces, scene_cut, av_shifted, audio_repaired
    missing_face_frames: int
    faceless_frames: list[int]  # frames without the subject's landmarks (NaN rows): never a target or a reference
    segments: list[int]  # first frame of each shot (scene cuts); chunks never cross one
    av_offset: int | None  # frames the audio was shifted by (None: sync step skipped, see settings["av_sync"])
    sync_confidence: float | None  # the SyncNet's LSE-C for the video (None: sync step skipped)


class ShardVideo(VideoStats):
    """An accepted video and the row groups (chunks) that hold it in its shard."""

    row_groups: list[int]


class VideoEntry(ShardVideo):
    """A video as the manifest lists it: where it is stored and which split it belongs to."""

    shard: str
    split_by_video: Split
    split_by_identity: Split


class ShardEntry(_Model):
    name: str
    frames: int
    bytes: int
    videos: list[str]


class Rejection(_Model):
    source: str
    reason: str
    detail: str


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    code_version: str
    settings: dict
    videos: list[VideoEntry]
    shards: list[ShardEntry]

    def split(self, name: Split, by: Literal["video", "identity"] = "video") -> list[VideoEntry]:
        """The videos of one split, with splits made by video or by identity (no speaker in two splits)."""
        key = "split_by_video" if by == "video" else "split_by_identity"
        return [v for v in self.videos if getattr(v, key) == name]

    def shard_uri(self, root: str, shard: str) -> str:
        return storage.join(root, shard)


class ShardResult(_Model):
    """What one shard task produced; its file under shards/ marks the shard as done."""

    name: str
    bytes: int
    videos: list[ShardVideo]
    rejected: list[Rejection]


class Report(_Model):
    accepted: int
    rejected: list[Rejection]
    input: str | None = None  # where the videos came from (julnet.paths.location); None in reports written before it was kept


def manifest_root(manifest_uri: str) -> str:
    """The folder or prefix a manifest's relative shard names are resolved against."""
    return manifest_uri.rsplit("/", 1)[0] if "/" in manifest_uri else "."


def read_manifest(uri: str) -> Manifest:
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"no dataset manifest at {uri}") from None
    manifest = Manifest.model_validate_json(text)
    if manifest.format_version != FORMAT_VERSION:
        raise ValueError(f"{uri}: manifest format {manifest.format_version}, this code reads {FORMAT_VERSION}")
    return manifest


def manifest_sha256(uri: str) -> str:
    """sha256 of the manifest file's bytes: names the exact dataset (videos, shards, splits), like `sha256sum`."""
    try:
        return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    except FileNotFoundError:
        raise FileNotFoundError(f"no dataset manifest at {uri}") from None


def assign_splits(keys: list[str], val_fraction: float, test_fraction: float) -> dict[str, Split]:
    """Deterministic split of keys by hash order; val and test get at least one key each when there are 3+."""
    ordered = sorted(set(keys), key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    n = len(ordered)
    n_test = max(1, round(n * test_fraction)) if n >= 3 and test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if n >= 3 and val_fraction > 0 else 0
    out: dict[str, Split] = {}
    for index, key in enumerate(ordered):
        out[key] = "test" if index < n_test else "val" if index < n_test + n_val else "train"
    return out
