"""Video and audio in and out for `julnet generate`: source frames in output order, speech checks, the MP4 writer."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import av
import numpy as np

from julnet.config import GenerateConfig
from julnet.data.video import FPS, VideoError, decode_audio, iter_frames, probe
from julnet.errors import BadAudioError, BadVideoError, InputNotFoundError, NoAudioStreamError, ShortAudioError, SilentAudioError

log = logging.getLogger(__name__)
T = TypeVar("T")
OUT_AUDIO_RATE = 48000
# (video encoder, audio encoder) in order of preference: H.264 + AAC plays everywhere.
CODEC_CHOICES = (("libx264", "aac"), ("h264", "aac"), ("mpeg4", "aac"), ("mpeg4", "mp2"))


# ---- frame order -----------------------------------------------------------------------------------------


def pingpong(j: int, n: int) -> int:
    """Source frame of output frame j for a video of n frames: 0, 1, .., n-1, n-2, .., 1, 0, 1, .."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    m = j % period
    return m if m < n else period - m



def source_frames(path: Path, n: int, total: int, block: int) -> Iterator[tuple[int, np.ndarray]]:
    """(source index, frame) for output frames 0..total-1 in ping-pong order, holding at most `block` frames.

    Forward sweeps stream the video from its start; backward sweeps (n-2 down to 1) read it in blocks of `block`
    frames, newest block first, each by seeking to it, so every sweep costs about one decode of the video.
    """
    j = 0
    while j < total:
        i = pingpong(j, n)
        if j == 0 or i == 0:  # forward sweep: stream
            expected = min(n, total - j)
            seen = 0
            for idx, frame in enumerate(itertools.islice(iter_frames(path, FPS), expected)):
                yield idx, frame
                j += 1
                seen += 1
            if seen < expected:
                raise BadVideoError(f"{path}: decoding gave {n} frames first, then {seen}")
        else:  # backward sweep n-2 .. 1: blocks newest first, each read from a seek
            hi = i + 1
            while hi > 1 and j < total:
                lo = max(1, hi - block)
                chunk = list(itertools.islice(iter_frames(path, FPS, start=lo), hi - lo))
                if len(chunk) < hi - lo:
                    raise BadVideoError(f"{path}: decoding gave {n} frames first, then {lo + len(chunk)}")
                for frame in reversed(chunk):
                    if j >= total:
                        break
                    yield pingpong(j, n), frame
                    j += 1
                hi = lo


# ---- overlap with compute ---------------------------------------------------------------------------------

# Bytes of RGB frames the decoding thread may hold ready ahead of the networks (see prefetch_depth).
PREFETCH_BYTES = 16 << 20


def prefetch_depth(batch_frames: int, width: int, height: int) -> int:
    """Frames of `width` x `height` to decode ahead of the networks: a batch, or fewer where a batch would take more
    than PREFETCH_BYTES, but not under 2: at 1080p, 2 frames instead of 16 (12 MB instead of 100 MB).

    Decoding a frame costs far less than dubbing and encoding it: the frames of a batch that are not ready yet
    decode while the encoding thread works through the batch before, so the lead saves little time."""
    return min(batch_frames, max(2, PREFETCH_BYTES // (width * height * 3)))


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items`, produced up to `depth` ahead by a background thread, so that decoding overlaps the caller's compute.

    The producer's exception is raised here; closing this iterator early stops the thread (and closes `items`)."""
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="julnet-decode", daemon=True)
    thread.start()
    try:
        while True:
            more, item = slots.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


class Background:
    """Calls run in order on one background thread, at most `depth` waiting, so that encoding overlaps the caller's
    compute. Used as a context manager: leaving it waits for every call; the first call's error is raised in the
    caller (at the next submit or on leaving), and after an error in the caller the waiting calls are dropped."""

    def __init__(self, depth: int, name: str) -> None:
        self.calls: queue.Queue[Callable[[], Any] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (call := self.calls.get()) is not None:
            if self.error is None and not self.cancelled:
                try:
                    call()
                except BaseException as exc:  # noqa: BLE001 - raised in the caller
                    self.error = exc

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue fn(*args), waiting while `depth` calls are queued."""
        if self.error is not None:
            raise self.error
        self.calls.put(functools.partial(fn, *args))

    def __enter__(self) -> Background:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.cancelled = kind is not None
        self.calls.put(None)
        self.thread.join()
        if kind is None and self.error is not None:
            raise self.error


# ---- output ----------------------------------------------------------------------------------------------


def choose_codecs() -> tuple[str, str]:
    """The first (video, audio) encoder pair this PyAV build has, H.264 + AAC preferred."""
    available = av.codec.codecs_available
    for video, audio in CODEC_CHOICES:
        try:
            if video in available and audio in available:
                av.codec.Codec(video, "w")
                av.codec.Codec(audio, "w")
                return video, audio
        except (av.FFmpegError, ValueError):
            continue
    raise RuntimeError("no usable video/audio encoder pair in this PyAV build (tried " + ", ".join(f"{v}+{a}" for v, a in CODEC_CHOICES) + ")")


def even_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the written video: odd sides padded by one, as 4:2:0 chroma (yuv420p) needs even sides."""
    return width + width % 2, height + height % 2


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """The frame with its last row/column repeated where a side is odd, so every source pixel is kept."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """An MP4 at 25 fps with one video (yuv420p, the size padded to even) and one mono audio track, written under
    a temporary name. yuv420p is what every player decodes; H.264 High 4:4:4 (yuv444p) is not."""

    def __init__(self, final: Path, width: int, height: int, codecs: tuple[str, str], crf: int, samples: np.ndarray) -> None:
        self.final = final
        self.samples = samples  # mono float32 at OUT_AUDIO_RATE, encoded alongside the video (interleaved)
        self.audio_done = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
        default_mode(tmp)
        self.tmp = Path(tmp)
        self.container = av.open(tmp, mode="w", format="mp4")
        video_codec, audio_codec = codecs
        self.video = self.container.add_stream(video_codec, rate=FPS)
        self.video.width, self.video.height = even_size(width, height)
        self.video.pix_fmt = "yuv420p"
        if video_codec == "libx264":
            self.video.options = {"crf": str(crf), "preset": "medium"}
        else:
            self.video.bit_rate = 8_000_000
        self.audio = self.container.add_stream(audio_codec, rate=OUT_AUDIO_RATE)
        self.audio.layout = "mono"
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pad_even(rgb)), format="rgb24")
        frame.pts = self.frames
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.frames += 1
        self._encode_audio(self.frames * OUT_AUDIO_RATE // FPS)

    def _encode_audio(self, until: int) -> None:
        """Encode whole audio frames up to sample `until` (all that is left when `until` is past the end)."""
        ctx = self.audio.codec_context
        size = ctx.frame_size or 1152
        fmt = ctx.format.name
        samples = self.samples
        while self.audio_done < min(until, len(samples)):
            start = self.audio_done
            if until < len(samples) and start + size > until:
                break
            chunk = samples[start : start + size]
            if len(chunk) < size:
                chunk = np.pad(chunk, (0, size - len(chunk)))
            if fmt.startswith("s16"):
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)[None]
            else:
                data = chunk.astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate = OUT_AUDIO_RATE
            frame.pts = start
            for packet in self.audio.encode(frame):
                self.container.mux(packet)
            self.audio_done = start + size

    def finish(self) -> None:
        for packet in self.video.encode(None):
            self.container.mux(packet)
        self._encode_audio(len(self.samples) + 1)
        for packet in self.audio.encode(None):
            self.container.mux(packet)
        self.container.close()

    def discard(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - cleaning up after another error
            pass
        self.tmp.unlink(missing_ok=True)



def default_mode(path: str) -> None:
    """mkstemp makes files 0600; give them the mode an ordinary open() would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)



def read_speech(path: Path, rate: int) -> np.ndarray:
    """Speech samples at `rate`, or a one-line error when the file is missing, unreadable, too damaged or has no audio.

    The spans of damaged packets are silence in their place, with a warning (the output video's audio track,
    decoded the same way, has them there too); audio of which less than 98 % decodes is refused (`bad_audio`)."""
    try:
        probe(path, require_video=False, require_audio=True, min_side=1, max_side=1 << 30)
        audio = decode_audio(path, rate)
    except VideoError as exc:
        if exc.reason == "not_found":
            raise InputNotFoundError(f"audio not found: {path}") from None
        if exc.reason == "no_audio_stream":
            raise NoAudioStreamError(f"no audio stream in {path}") from None
        if exc.reason == "bad_audio":
            raise BadAudioError(f"damaged audio in {path}: {exc.detail}") from None
        raise BadAudioError(f"unreadable audio file {path} ({exc})") from None
    if audio.lost:
        log.warning("generate: damaged audio in %s: %s, replaced by silence", path, audio.describe_loss())
    samples = audio.samples
    if samples.size == 0:
        raise NoAudioStreamError(f"audio stream of {path} decodes to nothing")
    return samples


def check_speech(samples: np.ndarray, rate: int, path: Path, settings: GenerateConfig) -> None:
    """Refuse, in one line, speech shorter than generate.min_audio_seconds or quieter than generate.silence_rms."""
    seconds = samples.size / rate
    if seconds < settings.min_audio_seconds:
        raise ShortAudioError(f"audio in {path} is {seconds:.3f} s long, shorter than generate.min_audio_seconds={settings.min_audio_seconds:g} s")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms < settings.silence_rms:
        raise SilentAudioError(f"no speech in {path}: audio RMS {rms:.2e} is below {settings.silence_rms:.0e} (silence)")
