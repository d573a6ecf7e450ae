"""Decode any video PyAV reads into upright RGB frames at a constant frame rate and 16 kHz mono audio."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

FPS = 25
SAMPLE_RATE = 16000

# Short machine-readable rejection reasons, written into preprocessing's rejection report.
REASONS = (
    "not_found",
    "not_a_video",
    "corrupt",
    "no_video_stream",
    "no_audio_stream",
    "bad_audio",
    "zero_length",
    "too_small",
    "too_large",
    "face_lost",
    "no_face",
    "too_short",
    "landmarks_mismatch",
    "no_audio_features",
    "out_of_sync",
    "error",
)

# Leading bytes of the containers we expect; an unreadable file that starts like one is "corrupt", else "not_a_video".
_SIGNATURES = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"wide"), (4, b"free"), (4, b"skip"),  # mp4 / mov
    (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"),  # MPEG program stream / elementary video
    (0, b"RIFF"), (0, b"\x1a\x45\xdf\xa3"), (0, b"FLV"), (0, b"OggS"),  # avi, mkv/webm, flv, ogg
    (0, b"\x30\x26\xb2\x75"), (0, b"\x47"),  # asf/wmv, MPEG transport stream
)
# Demuxers that open still images or text as a one-frame "video".
_NOT_VIDEO_FORMATS = ("image2", "tty")
# Seeks tried (each asking for an earlier time) before decoding from the start instead.
_SEEK_TRIES = 4
# The share of an audio track's span that must decode: the spans of packets the decoder rejects (damage) become
# silence at their place, and a track that loses more than the rest is refused as "bad_audio".
MIN_AUDIO_DECODED = 0.98


class VideoError(Exception):
    """A video preprocessing rejects; `reason` is one of REASONS, `detail` a human-readable note."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown VideoError reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.reason, self.detail)  # picklable across Ray workers


@dataclass(frozen=True)
class VideoInfo:
    """What probe() learns from headers and the first decoded frame."""

    container: str
    duration: float | None  # seconds, from the headers (None when they do not say)
    fps: float | None  # native average frame rate of the video stream
    width: int  # upright display size: after rotation and sample-aspect-ratio correction
    height: int
    rotation: int  # degrees counter-clockwise applied to decoded frames to make them upright
    start_time: float  # container time of the first video frame (of the audio when there is no video)
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    audio_rate: int | None


@dataclass(frozen=True)
class Clip:
    """A whole decoded video: frames at `fps` and audio whose sample 0 is at frame 0's time."""

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, upright
    audio: np.ndarray | None  # (S,) float32 mono at sample_rate; None when the file has no audio
    fps: int
    sample_rate: int
    info: VideoInfo


@dataclass(frozen=True)
class Audio:
    """A decoded audio track: mono samples, with the spans that did not decode (damaged packets) as silence."""

    samples: np.ndarray  # (S,) float32 at sample_rate
    sample_rate: int
    seconds: float  # the track's span: from its first packet to the end of its last one
    lost: tuple[tuple[float, float], ...]  # (container time, seconds) of each span that did not decode

    @property
    def lost_seconds(self) -> float:
        """Seconds of the track that did not decode and are silence instead."""
        return sum(seconds for _, seconds in self.lost)

    @property
    def decoded_fraction(self) -> float:
        """The share of the track's span that decoded (1 for an empty track)."""
        return 1.0 - self.lost_seconds / self.seconds if self.seconds > 0 else 1.0

    def describe_loss(self) -> str:
        """What did not decode, e.g. '0.052 of 2.978 s lost in 2 places, the first at 1.019 s'."""
        places = f"{len(self.lost)} place{'s' if len(self.lost) > 1 else ''}"
        return f"{self.lost_seconds:.3f} of {self.seconds:.3f} s lost in {places}, the first at {self.lost[0][0]:.3f} s" if self.lost else "nothing lost"


def probe(
    path: str | os.PathLike[str],
    *,
    require_video: bool = True,
    require_audio: bool = False,
    min_side: int = 128,
    max_side: int = 4096,
    max_duration: float | None = None,
) -> VideoInfo:
    """Inspect a file (headers plus one decoded frame) or raise VideoError with the rejection reason."""
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise VideoError("not_a_video", "no audio or video stream")
        if video is None and require_video:
            raise VideoError("no_video_stream")
        if audio is None and require_audio:
            raise VideoError("no_audio_stream")
        duration = _duration(container, video or audio)
        if duration is not None and duration <= 0:
            raise VideoError("zero_length", f"duration {duration}")
        if video is not None:
            first = _first_frame(container, video)
            rotation = _rotation(video, first)
            width, height = _display_size(video, first, rotation)
            start_time = float(_frame_time(first))
        else:
            width = height = rotation = 0
            start_time = _seconds(audio.start_time, audio.time_base)
        info = VideoInfo(
            container=container.format.name,
            duration=duration,
            fps=_native_fps(video),
            width=width,
            height=height,
            rotation=rotation,
            start_time=start_time,
            has_video=video is not None,
            has_audio=audio is not None,
            video_codec=video.codec_context.name if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_rate=audio.codec_context.sample_rate if audio is not None else None,
        )
    if video is not None and min(width, height) < min_side:
        raise VideoError("too_small", f"{width}x{height} < {min_side}")
    if max(width, height) > max_side:
        raise VideoError("too_large", f"{width}x{height} > {max_side}")
    if max_duration is not None and duration is not None and duration > max_duration:
        raise VideoError("too_large", f"{duration:.1f} s > {max_duration} s")
    return info


def iter_frames(path: str | os.PathLike[str], fps: int = FPS, start: int = 0) -> Iterator[np.ndarray]:
    """Stream upright uint8 RGB frames (H, W, 3) at a constant `fps`: output k shows the frame on screen at k/fps.

    Time 0 is the first frame's timestamp; the clip ends when the last frame's duration does. A frame shown
    for several output times is yielded as the same array each time: copy it before writing into it.
    With `start`, the stream begins at output `start` with the frames skipping that many would give: it seeks
    to a keyframe shown at or before that time and decodes from there, so the cost does not grow with `start`
    (streams that cannot be sought exactly are decoded from the beginning, converting only the frames shown).
    """
    if start > 0:
        sought = _resampled(path, fps, start, seek=True)
        try:
            first = next(sought)
        except _NoExactSeek:
            yield from _resampled(path, fps, start, seek=False)
            return
        except StopIteration:
            return
        yield first
        yield from sought
    else:
        yield from _resampled(path, fps, 0, seek=False)


class _NoExactSeek(Exception):
    """Seeking gave no keyframe at or before the wanted time; the caller decodes from the beginning instead."""


def _resampled(path: str | os.PathLike[str], fps: int, start: int, seek: bool) -> Iterator[np.ndarray]:
    """iter_frames' resampling from output `start`, either seeking there first or decoding from the first frame."""
    step = Fraction(1, fps)
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError("no_video_stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = _decode(container, stream)
        first = next(frames, None)
        if first is None:
            raise VideoError("zero_length", "no decodable video frame")
        origin = _frame_time(first)
        rotation, size = _rotation(stream, first), _display_size(stream, first, 0)
        k = 0
        if seek:
            frames = _seek(container, stream, origin, origin + start * step)
            k = start
        else:
            frames = itertools.chain([first], frames)
        last_t = held = held_rgb = None
        for frame in frames:
            t = _frame_time(frame, last_t, stream)
            if last_t is not None and t <= last_t:
                continue  # duplicated or out-of-order timestamp: keep the first
            while held is not None and origin + k * step < t:
                if k >= start:
                    if held_rgb is None:
                        held_rgb = _rgb(held, size, rotation)
                    yield held_rgb
                k += 1
            held, held_rgb, last_t = frame, None, t
        end = last_t + _frame_duration(held, stream)
        while origin + k * step < end:
            if k >= start:
                if held_rgb is None:
                    held_rgb = _rgb(held, size, rotation)
                yield held_rgb
            k += 1


def _seek(
    container: av.container.InputContainer, stream: av.video.VideoStream, origin: Fraction, target: Fraction
) -> Iterator[av.VideoFrame]:
    """Decoded frames from a keyframe shown at or before `target` (seconds) on; raises _NoExactSeek when the
    stream has no timestamps or the demuxer finds no such keyframe after `origin` (some demuxers land a GOP
    late, e.g. MPEG program streams: each retry asks for a time further back, 1 s, 2 s, 4 s).

    Frames the decoder gives before that keyframe (e.g. B-frames of an open GOP) are dropped: they are shown
    before it, so it hides them from every output at or after `target`. Exactness assumes timestamps do not go
    back across that keyframe (a broken stream that does may differ from the full decode after a seek).
    """
    if stream.time_base is None:
        raise _NoExactSeek
    back = Fraction(0)
    for _ in range(_SEEK_TRIES):
        if target - back <= origin:
            raise _NoExactSeek  # decoding from the first frame is what seeking there would do
        try:
            container.seek(math.floor((target - back) / stream.time_base), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            raise _NoExactSeek from None
        frames = _decode(container, stream)
        key = next((f for f in frames if f.key_frame), None)
        if key is None or key.pts is None:
            raise _NoExactSeek
        if _frame_time(key) <= target:
            return itertools.chain([key], frames)
        back = max(2 * back, Fraction(1))  # the demuxer landed past the target: ask for an earlier time
    raise _NoExactSeek


def read_frames(path: str | os.PathLike[str], fps: int = FPS) -> np.ndarray:
    """All frames of iter_frames stacked into (N, H, W, 3) uint8."""
    return np.stack(list(iter_frames(path, fps)))


def read_audio(
    path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE, start: float | None = None
) -> np.ndarray:
    """The first audio track as mono float32 at `sample_rate`; with `start` (seconds), sample 0 is at that time.

    Damaged packets are silence at their place (see decode_audio, which also says how much was lost)."""
    return decode_audio(path, sample_rate, start).samples


def decode_audio(
    path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE, start: float | None = None, min_decoded: float = MIN_AUDIO_DECODED
) -> Audio:
    """The first audio track, as read_audio gives it, with the spans that did not decode.

    A packet the decoder rejects (FFmpeg's decoders raise on a damaged frame header, e.g. a garbled sync word)
    costs its span, not the track: decoding goes on with the next packet, and the span is silence at its place,
    so everything after it stays aligned to the video. A demuxer may also drop damaged bytes, or glue them to the
    next frame, which is then lost as well; a gap in the decoded frames' timestamps is filled the same way.
    Damage the decoder cannot see (a garbled payload behind a valid header, in codecs without checksums) decodes
    to noise and goes unnoticed. Raises VideoError('bad_audio') when less than `min_decoded` of the span decodes.
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise VideoError("no_audio_stream")
        timeline = _AudioTimeline(sample_rate)
        try:
            for packet in container.demux(container.streams.audio[0]):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    timeline.reject(packet)
                    continue
                for frame in frames:
                    timeline.add(frame)
            audio = timeline.close(start)
        except av.FFmpegError as exc:
            raise VideoError("corrupt", str(exc)) from exc
    if audio.decoded_fraction < min_decoded:
        raise VideoError(
            "bad_audio",
            f"only {100 * audio.decoded_fraction:.1f} % of the audio track decodes ({audio.describe_loss()};"
            f" at least {100 * min_decoded:g} % must)",
        )
    return audio


def read_clip(
    path: str | os.PathLike[str],
    fps: int = FPS,
    sample_rate: int = SAMPLE_RATE,
    *,
    require_audio: bool = True,
    min_side: int = 128,
    max_side: int = 4096,
    max_duration: float | None = None,
) -> Clip:
    """probe() then decode everything: all frames and the audio aligned to the first frame."""
    info = probe(path, require_audio=require_audio, min_side=min_side, max_side=max_side, max_duration=max_duration)
    frames = read_frames(path, fps)
    audio = read_audio(path, sample_rate, start=info.start_time) if info.has_audio else None
    return Clip(frames=frames, audio=audio, fps=fps, sample_rate=sample_rate, info=info)


def _open(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """av.open with its failures mapped to VideoError reasons."""
    if not os.path.isfile(path):
        raise VideoError("not_found", os.fspath(path))
    if os.path.getsize(path) == 0:
        raise VideoError("zero_length", "empty file")
    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise VideoError("corrupt" if _has_signature(path) else "not_a_video", str(exc)) from exc
    name = container.format.name
    if name in _NOT_VIDEO_FORMATS or name.endswith("_pipe"):
        container.close()
        raise VideoError("not_a_video", f"demuxer {name}")
    return container


def _has_signature(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return any(head[at : at + len(magic)] == magic for at, magic in _SIGNATURES)


def _decode(container: av.container.InputContainer, stream: av.stream.Stream) -> Iterator[av.frame.Frame]:
    """container.decode(stream) with FFmpeg errors raised as VideoError('corrupt')."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        raise VideoError("corrupt", str(exc)) from exc


class _AudioTimeline:
    """decode_audio's track: decoded frames resampled in order to mono, with silence in the place of lost packets."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # keep channels: mono is their mean
        self.chunks: list[np.ndarray] = []
        self.rejected: list[tuple[Fraction, Fraction]] = []  # (time, duration) of each packet the decoder rejected
        self.lost: list[tuple[Fraction, Fraction]] = []  # (time, duration) of each span filled with silence
        self.origin: Fraction | None = None  # the track's start: its first decoded frame, or a rejected packet before it
        self.end = Fraction(0)  # where the frames so far end
        self.last: av.AudioFrame | None = None

    def reject(self, packet: av.Packet) -> None:
        """A packet the decoder rejected: its span will be silence (unless decoded frames cover it)."""
        if packet.pts is not None and packet.time_base is not None:
            self.rejected.append((packet.pts * packet.time_base, (packet.duration or 0) * packet.time_base))

    def add(self, frame: av.AudioFrame) -> None:
        """The next decoded frame, after silence in the place of what was lost since the previous one."""
        t = _frame_time(frame) if frame.pts is not None else self.end
        if self.origin is None:  # packets rejected before the first decoded frame are silence before it
            self.origin = self.end = min([t, *(at for at, _ in self.rejected)])
        if t - self.end > Fraction(frame.samples, 2 * frame.sample_rate):  # more than half a frame missing
            self._silence(frame, t - self.end)
        self.chunks += _mono(self.resampler.resample(frame))
        self.end, self.last = max(self.end, t + Fraction(frame.samples, frame.sample_rate)), frame

    def close(self, start: float | None) -> Audio:
        """The whole track (sample 0 at `start` seconds when given), after silence for rejected packets at its end."""
        rejected_end = max((at + length for at, length in self.rejected), default=Fraction(0))
        if self.last is not None and rejected_end > self.end:
            self._silence(self.last, rejected_end - self.end)
        elif self.last is None and self.rejected:  # nothing decoded
            self.origin = min(at for at, _ in self.rejected)
            self.lost.append((self.origin, rejected_end - self.origin))
            self.end = rejected_end
        self.chunks += _mono(self.resampler.resample(None))
        samples = np.concatenate(self.chunks).astype(np.float32, copy=False) if self.chunks else np.zeros(0, np.float32)
        if start is not None and self.origin is not None:
            offset = round((float(self.origin) - start) * self.sample_rate)
            samples = np.concatenate([np.zeros(offset, np.float32), samples]) if offset > 0 else samples[-offset:]
        seconds = float(self.end - self.origin) if self.origin is not None else 0.0
        return Audio(samples, self.sample_rate, seconds, tuple((float(at), float(length)) for at, length in self.lost))

    def _silence(self, like: av.AudioFrame, seconds: Fraction) -> None:
        """`seconds` of silence from the end so far, in the format, layout and rate of `like` (so the resampler takes it)."""
        frame = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=round(seconds * like.sample_rate))
        zero = b"\x80" if like.format.name.startswith("u8") else b"\x00"  # unsigned 8-bit samples are silent at 128
        for plane in frame.planes:
            plane.update(zero * plane.buffer_size)
        frame.sample_rate, frame.time_base = like.sample_rate, like.time_base
        if like.time_base is not None:
            frame.pts = round(self.end / like.time_base)
        self.chunks += _mono(self.resampler.resample(frame))
        self.lost.append((self.end, seconds))
        self.end += seconds


def _mono(frames: list[av.AudioFrame]) -> list[np.ndarray]:
    """Each frame's samples, the mean of its channels."""
    return [frame.to_ndarray().mean(axis=0) for frame in frames]


def _first_frame(container: av.container.InputContainer, stream: av.video.VideoStream) -> av.VideoFrame:
    frame = next(_decode(container, stream), None)
    if frame is None:
        raise VideoError("zero_length", "no decodable video frame")
    return frame


def _native_fps(stream: av.video.VideoStream | None) -> float | None:
    rate = (stream.average_rate or stream.guessed_rate) if stream is not None else None
    return float(rate) if rate else None


def _seconds(value: int | None, time_base: Fraction | None) -> float:
    return float(value * time_base) if value is not None and time_base is not None else 0.0


def _duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else None


def _frame_time(
    frame: av.frame.Frame, last_t: Fraction | None = None, stream: av.video.VideoStream | None = None
) -> Fraction:
    """Exact presentation time; a frame without pts follows the previous one by one nominal frame."""
    if frame.pts is not None and frame.time_base is not None:
        return frame.pts * frame.time_base
    if last_t is None:
        return Fraction(0)
    return last_t + _frame_duration(frame, stream)


def _frame_duration(frame: av.VideoFrame, stream: av.video.VideoStream) -> Fraction:
    if frame.duration and frame.time_base is not None:
        return frame.duration * frame.time_base
    rate = stream.average_rate or stream.guessed_rate or FPS
    return 1 / Fraction(rate)


def _rotation(stream: av.video.VideoStream, frame: av.VideoFrame) -> int:
    """Counter-clockwise degrees (0/90/180/270) from the display matrix, else from a legacy `rotate` tag."""
    degrees = frame.rotation
    if not degrees and stream.metadata.get("rotate"):
        degrees = -float(stream.metadata["rotate"])  # the tag is clockwise
    return int(round(degrees / 90)) * 90 % 360


def _display_size(stream: av.video.VideoStream, frame: av.VideoFrame, rotation: int) -> tuple[int, int]:
    """(width, height) in square pixels, before (rotation=0) or after rotation."""
    sar = stream.sample_aspect_ratio
    width = round(frame.width * sar) if sar and sar != 1 else frame.width
    return (frame.height, width) if rotation in (90, 270) else (width, frame.height)


def _rgb(frame: av.VideoFrame, size: tuple[int, int], rotation: int) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24", width=size[0], height=frame.height)
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)) if rotation else rgb
