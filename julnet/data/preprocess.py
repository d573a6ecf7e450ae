"""Preprocessing: raw talking-face videos -> Parquet shards, a manifest and a report of rejected videos.

1. plan:     list the input (a folder or prefix, or a .jsonl listing), pair videos with sidecar files and
             group them into shards by size. Deterministic, so a re-run plans the same shards.
2. process:  each shard on its own (the caller picks how: a loop, processes, Ray tasks). A shard is done
             once its result file exists; done shards are skipped, so a killed run resumes where it stopped.
3. finalize: gather the results, assign splits, write the report, then the manifest: the commit point.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
from contextlib import contextmanager
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from julnet import paths, storage
from julnet.config import Config
from julnet.data import audio as features
from julnet.data import sync
from julnet.data.crop import crop_boxes, crop_frames, to_crop
from julnet.data.landmarks import read_openface_csv
from julnet.data.manifest import (
    MANIFEST_NAME,
    REPORT_NAME,
    Manifest,
    Rejection,
    Report,
    ShardEntry,
    ShardResult,
    ShardVideo,
    VideoEntry,
    VideoStats,
    assign_splits,
)
from julnet.data.scenes import frame_signature, segment_ranges, segment_starts
from julnet.data.shards import ProcessedVideo, shard_schema, write_shard
from julnet.data.sync import SyncScorer
from julnet.data.track import SubjectTrack, track_faces, track_frames
from julnet.data.video import VideoError, VideoInfo, decode_audio, iter_frames, probe, read_audio
from julnet.errors import BadOutputError
from julnet.progress import Progress
from julnet.version import code_version

log = logging.getLogger(__name__)

OPENFACE_SUFFIX = ".csv"
DEEPSPEECH_SUFFIXES = ("_deepspeech.txt", ".deepspeech.txt", ".deepspeech.npy")
# Shard bytes per input byte, to size shards from the listing alone: 416x320 JPEG crops take about 2-5x
# the bytes of typical compressed sources. Shards only need to be roughly the configured size.
OUTPUT_PER_INPUT_BYTE = 3.0

Mapper = Callable[[Callable[[Any], ShardResult], Sequence[Any]], Iterable[ShardResult]]


class Source(BaseModel):
    """One input video and its optional sidecars (OpenFace landmarks, DeepSpeech features)."""

    model_config = ConfigDict(frozen=True)

    uri: str
    size: int
    video_id: str
    identity: str
    openface_csv: str | None = None
    deepspeech: str | None = None


class ShardPlan(BaseModel):
    name: str
    sources: list[Source]


def settings(cfg: Config, scorer: SyncScorer | None = None) -> dict[str, Any]:
    """What the shards' content depends on, recorded in the manifest (the loader reads sizes from it)."""
    p = cfg.preprocess
    return {
        **p.model_dump(exclude={"val_fraction", "test_fraction", "shard_target_mb"}),
        "audio_features": cfg.audio.features,
        "audio_dim": cfg.audio.dim,
        "audio_window": cfg.audio.window,
        "av_sync": sync.describe(cfg, scorer),
    }


# ---- 1. plan -------------------------------------------------------------------------------------------


def discover(input_uri: str) -> tuple[list[Source], list[Rejection]]:
    """Videos under a folder/prefix (every file that is not a sidecar is a candidate) or in a .jsonl listing.

    Hidden files are skipped. Sidecars with no video are returned as rejections, never dropped silently.
    """
    if input_uri.endswith(".jsonl"):
        return _from_listing(input_uri), []
    root = input_uri.rstrip("/")
    files = [(uri, size) for uri, size in storage.list_sizes(input_uri) if not PurePosixPath(uri).name.startswith(".")]
    if not files:
        raise FileNotFoundError(f"no input files under {input_uri}")
    relative = {uri: uri[len(root) + 1 :] for uri, _ in files}
    openface, deepspeech, videos = {}, {}, []
    for uri, size in files:
        rel = relative[uri]
        ds_suffix = next((s for s in DEEPSPEECH_SUFFIXES if rel.endswith(s)), None)
        if ds_suffix:
            deepspeech[rel[: -len(ds_suffix)]] = uri
        elif rel.endswith(OPENFACE_SUFFIX):
            openface[rel[: -len(OPENFACE_SUFFIX)]] = uri
        else:
            videos.append((uri, size, rel))
    stems = Counter(str(PurePosixPath(rel).with_suffix("")) for _, _, rel in videos)
    sources = []
    for uri, size, rel in videos:
        stem = str(PurePosixPath(rel).with_suffix(""))
        video_id = stem if stems[stem] == 1 else rel
        parts = PurePosixPath(rel).parts
        sources.append(
            Source(
                uri=uri,
                size=size,
                video_id=video_id,
                identity=parts[0] if len(parts) > 1 else video_id,
                openface_csv=openface.pop(stem, None),
                deepspeech=deepspeech.pop(stem, None),
            )
        )
    orphans = [Rejection(source=u, reason="not_a_video", detail="sidecar file with no video") for u in [*openface.values(), *deepspeech.values()]]
    return sources, orphans


def _from_listing(listing_uri: str) -> list[Source]:
    """A .jsonl listing: one {"video": uri, "identity"?, "id"?, "openface_csv"?, "deepspeech"?} per line."""

    def resolve(uri: str | None) -> str | None:
        return None if uri is None else storage.relative_to(listing_uri, uri)

    sources = []
    for number, line in enumerate(storage.read_text(listing_uri).splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            uri = resolve(item["video"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{listing_uri}:{number}: expected a JSON object with a 'video' key ({exc})") from None
        fs, path = storage.filesystem(uri)
        video_id = item.get("id") or str(PurePosixPath(uri).with_suffix("").name)
        sources.append(
            Source(
                uri=uri,
                size=max(fs.get_file_info(path).size or 0, 0),
                video_id=video_id,
                identity=item.get("identity") or video_id,
                openface_csv=resolve(item.get("openface_csv")),
                deepspeech=resolve(item.get("deepspeech")),
            )
        )
    ids = Counter(s.video_id for s in sources)
    dupes = [i for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"{listing_uri}: video ids must be unique, repeated: {dupes[:3]}")
    return sources


def plan_shards(sources: list[Source], cfg: Config, scorer: SyncScorer | None = None) -> list[ShardPlan]:
    """Group videos (sorted by id) into shards of about preprocess.shard_target_mb; names hash the content."""
    target = cfg.preprocess.shard_target_mb * 1e6 / OUTPUT_PER_INPUT_BYTE
    digest = json.dumps(settings(cfg, scorer), sort_keys=True)
    groups: list[list[Source]] = [[]]
    total = 0
    for source in sorted(sources, key=lambda s: s.video_id):
        if groups[-1] and total >= target:
            groups.append([])
            total = 0
        groups[-1].append(source)
        total += source.size
    plans = []
    for group in filter(None, groups):
        key = digest + "".join(f"\n{s.video_id}|{s.uri}|{s.size}|{s.openface_csv}|{s.deepspeech}" for s in group)
        plans.append(ShardPlan(name="part-" + hashlib.sha256(key.encode()).hexdigest()[:16], sources=group))
    return plans


# ---- 2. process ----------------------------------------------------------------------------------------


def process_shard(plan: ShardPlan, cfg: Config, output_uri: str, scorer: SyncScorer | None = None) -> ShardResult:
    """Process one shard's videos, write the shard (atomically) and then its result file; `scorer` checks AV sync."""
    result_uri = storage.join(output_uri, "shards", f"{plan.name}.json")
    if storage.exists(result_uri):
        return ShardResult.model_validate_json(storage.read_text(result_uri))
    with _torch_threads(1):  # one shard per CPU: a task's SyncNet scoring must not spread over the machine's cores
        return _process_shard(plan, cfg, output_uri, result_uri, scorer)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside, restored after (it is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _process_shard(plan: ShardPlan, cfg: Config, output_uri: str, result_uri: str, scorer: SyncScorer | None) -> ShardResult:
    """process_shard's work once it is known not to be done yet."""
    shard_uri = storage.join(output_uri, "shards", f"{plan.name}.parquet")
    for uri in (shard_uri, result_uri):
        storage.discard_partial(uri)
    stats: list[VideoStats] = []
    rejected: list[Rejection] = []
    progress = ShardProgress(plan)
    with tempfile.TemporaryDirectory(prefix="julnet-preprocess-") as tmp:
        accepted = _accepted(plan.sources, cfg, Path(tmp), stats, rejected, progress, sync.active(cfg, scorer))
        schema = shard_schema(cfg.audio.dim, cfg.audio.window)
        groups = write_shard(shard_uri, accepted, schema, cfg.preprocess.chunk_frames)
    progress.close(len(stats), len(rejected))
    if groups:
        fs, path = storage.filesystem(shard_uri)
        size = fs.get_file_info(path).size
    else:
        storage.delete(shard_uri, missing_ok=True)
        size = 0
    videos = [ShardVideo(**s.model_dump(), row_groups=groups[s.id]) for s in stats]
    result = ShardResult(name=plan.name, bytes=size, videos=videos, rejected=rejected)
    storage.write_text(result_uri, result.model_dump_json(indent=1))
    return result


def _accepted(
    sources: list[Source],
    cfg: Config,
    tmp: Path,
    stats: list[VideoStats],
    rejected: list[Rejection],
    progress: ShardProgress,
    scorer: SyncScorer | None,
) -> Iterator[ProcessedVideo]:
    """Process videos one at a time (only one is in memory), recording stats and rejections as it goes."""
    for index, source in enumerate(sources):
        progress.start_video(index)
        try:
            video, video_stats = process_video(source, cfg, tmp, progress, scorer)
        except VideoError as exc:
            rejected.append(Rejection(source=source.uri, reason=exc.reason, detail=exc.detail))
            continue
        except Exception as exc:  # bad input must never stop the job; it is reported instead
            log.exception("unexpected error preprocessing %s", source.uri)
            rejected.append(Rejection(source=source.uri, reason="error", detail=f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        finally:
            progress.end_video()
        stats.append(video_stats)
        yield video


class ShardProgress:
    """Progress lines of one shard, in frames through the landmark pass (the slow one), video by video.

    The shard's frame total is known only as its videos are probed: until then it is estimated from the
    source sizes, at the frames per byte of the videos probed so far (`~N` in the lines).
    """

    def __init__(self, plan: ShardPlan, every_s: float | None = None):
        self.sources = plan.sources
        self.frames: list[int | None] = [None] * len(plan.sources)  # expected frames once probed, done ones once finished
        self.index = 0
        self.ticks = 0
        self.progress = Progress(f"[preprocess {plan.name}]", None, "frames", estimated=True, every_s=every_s, logger=log)

    def start_video(self, index: int) -> None:
        self.index, self.ticks = index, 0

    def probed(self, expected_frames: int | None) -> None:
        """The current video's frame count as its headers give it (None when they do not)."""
        if expected_frames is not None:
            self.frames[self.index] = max(expected_frames, 0)

    def frame(self) -> None:
        """One more frame of the current video through the landmark pass."""
        self.ticks += 1
        if self.frames[self.index] is not None and self.ticks > self.frames[self.index]:
            self.frames[self.index] = self.ticks
        source = self.sources[self.index]
        note = f"video {self.index + 1}/{len(self.sources)} {source.video_id}"
        self.progress.update(advance=1, total=self.estimate(), estimated=None in self.frames, note=note)

    def end_video(self) -> None:
        """The current video is finished (accepted or rejected): its frames are the ones counted."""
        self.frames[self.index] = self.ticks

    def estimate(self) -> int | None:
        """The shard's frames: counted or probed where known, else by size at the known frames per byte."""
        known = [(frames, s.size) for frames, s in zip(self.frames, self.sources) if frames is not None]
        unknown = sum(s.size for frames, s in zip(self.frames, self.sources) if frames is None)
        known_bytes = sum(size for _, size in known)
        if unknown and not known_bytes:
            return None
        per_byte = sum(frames for frames, _ in known) / known_bytes if known_bytes else 0.0
        return round(sum(frames for frames, _ in known) + unknown * per_byte)

    def close(self, accepted: int, rejected: int) -> None:
        self.progress.close(f"{len(self.sources)} videos: {accepted} accepted, {rejected} rejected")


def process_video(
    source: Source, cfg: Config, tmp: Path, progress: ShardProgress | None = None, scorer: SyncScorer | None = None
) -> tuple[ProcessedVideo, VideoStats]:
    """Decode, track the face, crop, encode, compute audio features and check sync for one video, or raise VideoError.

    `progress` (the shard's) counts the frames of the landmark pass; `scorer` checks AV sync (None: skipped).
    """
    p = cfg.preprocess
    scorer = sync.active(cfg, scorer)
    local = _local(source.uri, tmp)
    info = probe(local, require_audio=cfg.audio.features == "logmel", min_side=p.min_side, max_side=p.max_side)
    if progress is not None:
        progress.probed(None if info.duration is None else round(info.duration * p.fps))
    # Before the landmark pass, so that audio too damaged to use is rejected at once.
    needs_samples = info.has_audio and (cfg.audio.features == "logmel" or scorer is not None and scorer.needs_samples)
    audio = decode_audio(local, p.sample_rate, start=info.start_time) if needs_samples else None
    samples = audio.samples if audio is not None else None
    subject = _track(local, source, info, cfg, tmp, progress)
    landmarks = subject.landmarks
    k = len(landmarks)
    if k == 0:
        raise VideoError("zero_length", "no frames decoded")
    if k < p.min_frames:
        raise VideoError("too_short", f"{k} frames, preprocess.min_frames is {p.min_frames}")
    if all(points is None for points in landmarks):
        raise VideoError("no_face", f"no face found in any of {k} frames")
    missing = sum(points is None for points in landmarks)
    if missing > p.max_missing_face_fraction * k:
        raise VideoError("face_lost", f"no face in {missing} of {k} frames")
    boxes = _shot_boxes(landmarks, subject.segments, (info.width, info.height))
    quality = [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality]
    nan = np.full((68, 2), np.nan, np.float32)
    points = np.stack(
        [to_crop(pts, box, p.crop_height, p.crop_width) if pts is not None else nan for pts, box in zip(landmarks, boxes)]
    ).astype(np.float32)
    jpegs, kept = [], []
    for crop, crop_points in zip(crop_frames(iter_frames(local, p.fps), boxes, p.crop_height, p.crop_width), points):
        jpegs.append(cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), quality)[1].tobytes())
        if scorer is not None:
            kept.append(scorer.keep(crop, crop_points))
    if len(jpegs) != k:
        raise VideoError("corrupt", f"decoding gave {k} frames, then {len(jpegs)}")
    rows = _audio_rows(samples, source, k, cfg, tmp)
    offset = confidence = None
    if scorer is not None:
        rows, offset, confidence = _synced(scorer, np.stack(kept), samples, rows, p.max_av_offset)
    fixes = [
        name
        for name, needed in (
            ("resampled_fps", abs((info.fps or 0) - p.fps) > 0.01),
            ("rotated", info.rotation != 0),
            ("multiple_faces", subject.multiple_faces),
            ("scene_cut", len(subject.segments) > 1),
            ("av_shifted", bool(offset)),
            ("audio_repaired", audio is not None and bool(audio.lost)),
        )
        if needed
    ]
    video_stats = VideoStats(
        id=source.video_id,
        source=source.uri,
        identity=source.identity,
        frames=k,
        fps=float(p.fps),
        duration=k / p.fps,
        source_fps=float(info.fps or 0.0),
        source_size=(info.width, info.height),
        rotation=info.rotation,
        fixes=fixes,
        missing_face_frames=missing,
        faceless_frames=[i for i, pts in enumerate(landmarks) if pts is None],
        segments=subject.segments,
        av_offset=offset,
        sync_confidence=confidence,
    )
    windows = features.frame_windows(rows, cfg.audio.window)
    return ProcessedVideo(source.video_id, jpegs, points, windows, p.fps, subject.segments), video_stats


def _shot_boxes(landmarks: list[np.ndarray | None], segments: list[int], size: tuple[int, int]) -> np.ndarray:
    """Smoothed crop boxes shot by shot (smoothing never crosses a cut); a shot with no face gets the whole frame
    (its frames have no landmarks, so they are stored but never used)."""
    whole = np.array([0.0, 0.0, float(size[0]), float(size[1])])
    parts = []
    for shot in segment_ranges(segments, len(landmarks)):
        part = landmarks[shot.start : shot.stop]
        found = any(points is not None for points in part)
        parts.append(crop_boxes(part, max_missing=1.0).boxes if found else np.tile(whole, (len(part), 1)))
    return np.concatenate(parts)


def _synced(
    scorer: SyncScorer, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray, max_offset: int
) -> tuple[np.ndarray, int, float]:
    """The audio rows shifted by the SyncNet's offset, the offset and the confidence; VideoError when out of sync."""
    try:
        result = scorer.score(kept, samples, rows, max_offset)
    except ValueError as exc:
        raise VideoError("out_of_sync", str(exc)) from None
    if result.confidence < scorer.min_confidence:
        raise VideoError(
            "out_of_sync", f"{scorer.name}: confidence (LSE-C) {result.confidence:.3f} < {scorer.min_confidence} at offset {result.offset}"
        )
    return sync.shift_rows(rows, result.offset), result.offset, result.confidence


def _local(uri: str, tmp: Path) -> Path:
    """A local path for a URI (object-store files are copied into tmp first; decoders need seekable files)."""
    if storage.is_local(uri):
        fs, path = storage.filesystem(uri)
        if fs.get_file_info(path).type.name == "NotFound":
            raise VideoError("not_found", uri)
        return Path(path)
    try:
        return storage.copy_to_local(uri, tmp)
    except FileNotFoundError:
        raise VideoError("not_found", uri) from None


def read_source_audio(uri: str, sample_rate: int) -> np.ndarray:
    """A source video's audio as preprocessing aligns it: mono float32 at `sample_rate`, sample 0 at its first frame.

    For metrics that need the raw audio the shards do not keep (the expert SyncNet's MFCCs); raises VideoError.
    """
    with tempfile.TemporaryDirectory(prefix="julnet-audio-") as tmp:
        local = _local(uri, Path(tmp))
        info = probe(local, require_audio=True, min_side=1, max_side=1 << 30)
        return read_audio(local, sample_rate, start=info.start_time)


def _track(
    local: Path, source: Source, info: VideoInfo, cfg: Config, tmp: Path, progress: ShardProgress | None = None
) -> SubjectTrack:
    """The subject per output frame and the shots: the faces of the OpenFace sidecar when there is one, else
    dlib's, tracked either way (julnet.data.track); scene cuts from the frames."""
    p = cfg.preprocess
    frames = _counted(iter_frames(local, p.fps), progress)
    if source.openface_csv is None:
        if p.landmarks == "openface":
            raise VideoError("landmarks_mismatch", "preprocess.landmarks=openface but the video has no OpenFace CSV")
        return track_frames(frames, p)
    if abs((info.fps or 0) - p.fps) > 0.01:
        raise VideoError("landmarks_mismatch", f"OpenFace CSV needs a {p.fps} fps video, this one is {info.fps} fps")
    signatures = [frame_signature(frame) for frame in frames]
    k = len(signatures)
    faces = read_openface_csv(_local(source.openface_csv, tmp))
    if abs(len(faces) - k) > 1:
        raise VideoError("landmarks_mismatch", f"OpenFace CSV has {len(faces)} frames, the video {k}")
    return track_faces((faces + [[]])[:k], segment_starts(signatures, p.scene_cut_histogram, p.scene_cut_pixels), p)


def _counted(frames: Iterable[np.ndarray], progress: ShardProgress | None) -> Iterator[np.ndarray]:
    """The frames, each counted by `progress` once the caller is done with it."""
    for frame in frames:
        yield frame
        if progress is not None:
            progress.frame()


def _audio_rows(samples: np.ndarray | None, source: Source, k: int, cfg: Config, tmp: Path) -> np.ndarray:
    """(K, D) audio features aligned with the K output frames, from the decoded samples or the DeepSpeech sidecar."""
    p = cfg.preprocess
    if cfg.audio.features == "deepspeech":
        if source.deepspeech is None:
            raise VideoError("no_audio_features", "audio.features=deepspeech but the video has no DeepSpeech sidecar")
        try:
            return features.load_deepspeech(_local(source.deepspeech, tmp), k, tolerance=1)
        except ValueError as exc:
            raise VideoError("no_audio_features", str(exc)) from None
    if samples is None or len(samples) == 0:
        raise VideoError("no_audio_stream", "audio track decodes to nothing")
    return features.frame_features(samples, p.sample_rate, k, p.fps, cfg.audio.n_mels)


# ---- 3. finalize ---------------------------------------------------------------------------------------


def finalize(
    results: list[ShardResult], extra_rejections: list[Rejection], cfg: Config, output_uri: str, scorer: SyncScorer | None = None,
    input_uri: str | None = None,
) -> tuple[Manifest, Report]:
    """Assign splits, then write the report (naming `input_uri`) and, last, the manifest (only where their content changed)."""
    p = cfg.preprocess
    shard_of = {v.id: r.name for r in results for v in r.videos}
    videos = sorted((v for r in results for v in r.videos), key=lambda v: v.id)
    by_video = assign_splits([v.id for v in videos], p.val_fraction, p.test_fraction)
    by_identity = assign_splits([v.identity for v in videos], p.val_fraction, p.test_fraction)
    entries = [
        VideoEntry(
            **v.model_dump(),
            shard=f"shards/{shard_of[v.id]}.parquet",
            split_by_video=by_video[v.id],
            split_by_identity=by_identity[v.identity],
        )
        for v in videos
    ]
    shards = [
        ShardEntry(name=f"shards/{r.name}.parquet", frames=sum(v.frames for v in r.videos), bytes=r.bytes, videos=[v.id for v in r.videos])
        for r in sorted(results, key=lambda r: r.name)
        if r.videos
    ]
    manifest = Manifest(code_version=code_version(), settings=settings(cfg, scorer), videos=entries, shards=shards)
    rejected = sorted([*extra_rejections, *(x for r in results for x in r.rejected)], key=lambda x: x.source)
    report = Report(accepted=len(entries), rejected=rejected, input=None if input_uri is None else paths.location(input_uri) or input_uri)
    _write_if_changed(storage.join(output_uri, REPORT_NAME), report.model_dump_json(indent=1))
    _write_if_changed(storage.join(output_uri, MANIFEST_NAME), manifest.model_dump_json(indent=1))
    return manifest, report


def _write_if_changed(uri: str, text: str) -> None:
    if not (storage.exists(uri) and storage.read_text(uri) == text):
        storage.write_text(uri, text)


def check_output(input_uri: str, output_uri: str, overwrite: bool = False) -> bool:
    """Refuse, in one line (BadOutputError), an output that is the input, lies inside it or holds it, or that holds
    a dataset made from another input (unless `overwrite`); True when such a dataset is to be replaced. A dataset
    made from this input is resumed, and one whose report does not name its input is taken to be this input's."""
    if paths.inside(output_uri, input_uri):
        raise BadOutputError(f"the output {output_uri} is the input {input_uri} or lies inside it: give the dataset a folder outside the videos")
    if not input_uri.endswith(".jsonl") and paths.inside(input_uri, output_uri):
        raise BadOutputError(f"the output {output_uri} holds the input {input_uri}: give the dataset a folder outside the videos")
    report_uri = storage.join(output_uri, REPORT_NAME)
    try:
        made_from = Report.model_validate_json(storage.read_text(report_uri)).input
    except (FileNotFoundError, ValueError):  # no dataset yet, or a report this code cannot read: finalize replaces it
        return False
    if made_from is None or paths.same_file(made_from, input_uri):
        return False
    if not overwrite:
        raise BadOutputError(f"the output {output_uri} holds a dataset made from {made_from}, not {input_uri}: --overwrite replaces it")
    return True


def run(
    input_uri: str, output_uri: str, cfg: Config, mapper: Mapper = map, scorer: SyncScorer | None = None, overwrite: bool = False
) -> tuple[Manifest, Report]:
    """The whole preprocessing job; `mapper(fn, plans)` runs shard tasks (in any order, any parallelism).

    `scorer` (picklable, it travels to the shard tasks) checks and fixes AV sync; None skips that step, and the
    manifest's settings.av_sync says so. The output is checked first (check_output): a dataset of this input is
    resumed; one of another input is refused, or with `overwrite` deleted (manifest first, then report and shards).
    """
    if check_output(input_uri, output_uri, overwrite):
        log.warning("preprocess: replacing the dataset at %s, made from another input", output_uri)
        for name in (MANIFEST_NAME, REPORT_NAME, "shards"):
            storage.delete(storage.join(output_uri, name), missing_ok=True)
    sources, orphans = discover(input_uri)
    plans = plan_shards(sources, cfg, scorer)
    log.info("preprocess: %d videos in %d shards -> %s", len(sources), len(plans), output_uri)
    task = functools.partial(process_shard, cfg=cfg, output_uri=output_uri, scorer=scorer)
    results: list[ShardResult] = []
    progress = Progress("[preprocess]", len(sources), "videos", logger=log)
    accepted = rejected = 0
    for result in mapper(task, plans):
        results.append(result)
        accepted, rejected = accepted + len(result.videos), rejected + len(result.rejected)
        progress.update(advance=len(result.videos) + len(result.rejected),
                        note=f"shard {len(results)}/{len(plans)} {result.name}: {accepted} accepted, {rejected} rejected so far")
    progress.close(f"{len(plans)} shards: {accepted} accepted, {rejected} rejected")
    return finalize(results, orphans, cfg, output_uri, scorer, input_uri)
