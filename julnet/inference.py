"""Inference: dub a video with a speech clip, and say per frame how far to trust the result.

`dub(video, audio, model, out)` reuses preprocessing's decode (julnet.data.video.iter_frames at 25 fps),
face tracking (julnet.data.track.track_video: the same dlib pass and subject tracking) and crop boxes (crop_boxes smoothing, crop_frame),
so a face is cropped exactly the way training data was made. Three streaming passes over the video:

1. the tracked subject's landmarks for every source frame (68 points each: small), then smoothed crop boxes;
2. the reference frames (chosen once per video), cropped like training;
3. generation: output frame j shows source frame pingpong(j) (0, 1, .., n-1, n-2, .., 1, 0, 1, ..) when
   the video is shorter than the audio, else frame j (the video is cut to the audio). Frames go through
   the generator and the uncertainty module `batch_frames` at a time and are written as they come; the
   generated crop is resized back to its box and blended into the ORIGINAL frame with a feathered mask
   (1 inside, a linear ramp to 0 over `feather` of the box's shorter side at its edge). Pixels outside the
   box are never touched. Frames without a detected face pass through unchanged and are flagged.

Memory: at most 2 x `batch_frames` source frames are held (a batch, and a block of a backward sweep), plus
the landmarks, the boxes and the audio. Going backwards through a short video (ping-pong), each block of
`batch_frames` frames is read by seeking to a keyframe before it (iter_frames(start=...)), so a backward sweep
decodes the video about once more (plus a GOP per block), not once per block.

Settings come from the `generate` section of the model's config (julnet.config.GenerateConfig), with
`generate.key=value` overrides; the report records the settings used.

Audio: decoded with read_audio and resampled (PyAV's resampler) to 16 kHz mono for the features, whatever
its own rate and channel count; the muxed track is the same audio resampled to 48 kHz mono, trimmed or
padded with silence to exactly the output's length (frames / 25 s).

Report (JSON), per frame, over the mouth region (face.mouth_box) of the crop:
- `sigma_mean`: mean σ = exp(log σ) of the uncertainty module;
- `error_pred_mean`: mean predicted absolute error ε̂ (pixel values in [0, 1]);
- `confidence` = exp(-error_pred_mean / generate.error_scale), in (0, 1]; 1 means no error expected;
- `low_confidence`: confidence < generate.confidence_threshold;
- `face_found`: False for pass-through frames (their statistics are null, confidence 0, flagged low);
- `tracking_lost`: the tracked subject was not found in the source frame (lost, or no face at all);
- `source_frame`: the source frame shown; `box`: the crop box (x0, y0, x1, y1) in source pixels, end-exclusive.
Top level: `video`, `audio`, `output`, `settings` (the generate section used), `summary`, `frames`.
Summary: frame counts, frames without a face, frames where tracking was lost, low-confidence count and fraction (no-face frames count as
low-confidence), mean/min/max/p10/p90 of each statistic over the frames with a face, and `source_size` and
`output_size` ([height, width]): videos are written as yuv420p, which needs even sides, so an odd side is padded
by repeating its last row/column (every source pixel is kept; cropping would drop one).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

from julnet.config import Config, GenerateConfig, override_config
from julnet.errors import (
    BadAudioError,
    BadOutputError,
    BadVideoError,
    GenerateError,
    NoAudioStreamError,
    NoFaceError,
    ShortAudioError,
    SilentAudioError,
    UnsupportedModelError,
)
from julnet.data import audio as features
from julnet.data.crop import crop_boxes, crop_frame, pixel_box
from julnet.data.references import reference_indices
from julnet.data.track import track_video
from julnet.data.video import FPS, SAMPLE_RATE, VideoError, iter_frames, probe, read_audio
from julnet.face import mask_mouth, mouth_box
from julnet.models.generator import Generator
from julnet.models.uncertainty import UncertaintyModule
from julnet.redact import redact_tree
from julnet.training.trained import load_model, model_resolution

log = logging.getLogger(__name__)

OUT_AUDIO_RATE = 48000
PROGRESS_EVERY_S = 10.0  # seconds between progress lines of the generation pass
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


def _source_frames(path: Path, n: int, total: int, block: int) -> Iterator[tuple[int, np.ndarray]]:
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


class _Writer:
    """An MP4 at 25 fps with one video (yuv420p, the size padded to even) and one mono audio track, written under
    a temporary name. yuv420p is what every player decodes; H.264 High 4:4:4 (yuv444p) is not."""

    def __init__(self, final: Path, width: int, height: int, codecs: tuple[str, str], crf: int, samples: np.ndarray) -> None:
        self.final = final
        self.samples = samples  # mono float32 at OUT_AUDIO_RATE, encoded alongside the video (interleaved)
        self.audio_done = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
        _default_mode(tmp)
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


def _default_mode(path: str) -> None:
    """mkstemp makes files 0600; give them the mode an ordinary open() would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _feather_mask(h: int, w: int, feather: float) -> np.ndarray:
    """(h, w, 1) float32: 1 inside, a linear ramp to ~0 over `feather` of the shorter side at the edge."""
    ramp = max(1.0, feather * min(h, w))
    ys = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5)
    xs = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5)
    mask = np.minimum.outer(ys, xs) / ramp
    return np.clip(mask, 0.0, 1.0).astype(np.float32)[..., None]


def paste(frame: np.ndarray, crop: np.ndarray, box: np.ndarray, feather: float = 0.1) -> np.ndarray:
    """A copy of `frame` with `crop` (any size, RGB uint8 or float in [0, 255]) resized to the box and blended
    in with a feathered edge; pixels outside the box (and the frame) are unchanged."""
    out = frame.copy()
    x0, y0, x1, y1 = pixel_box(box)
    bw, bh = x1 - x0, y1 - y0
    big = cv2.resize(np.asarray(crop, np.float32), (bw, bh), interpolation=cv2.INTER_LINEAR)
    mask = _feather_mask(bh, bw, feather)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    sub = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    region = out[fy0:fy1, fx0:fx1].astype(np.float32)
    m = mask[sub]
    out[fy0:fy1, fx0:fx1] = np.clip(region * (1 - m) + big[sub] * m + 0.5, 0, 255).astype(np.uint8)
    return out


def heat_map(sigma: np.ndarray, sigma_max: float) -> np.ndarray:
    """σ map (h, w) -> RGB uint8 JET colours, σ = 0 .. sigma_max (clipped)."""
    level = np.clip(sigma / sigma_max, 0, 1) * 255
    return cv2.cvtColor(cv2.applyColorMap(level.astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


# ---- the whole thing -------------------------------------------------------------------------------------


def _read_speech(path: Path, rate: int, settings: GenerateConfig) -> np.ndarray:
    """Speech samples at `rate`, rejected with a one-line error when missing, too short or silent."""
    try:
        info = probe(path, require_video=False, require_audio=True, min_side=1, max_side=1 << 30)
        del info
        samples = read_audio(path, rate)
    except VideoError as exc:
        if exc.reason == "no_audio_stream":
            raise NoAudioStreamError(f"no audio stream in {path}") from None
        raise BadAudioError(f"unreadable audio file {path} ({exc})") from None
    if samples.size == 0:
        raise NoAudioStreamError(f"audio stream of {path} decodes to nothing")
    seconds = samples.size / rate
    if seconds < settings.min_audio_seconds:
        raise ShortAudioError(f"audio in {path} is {seconds:.3f} s long, shorter than generate.min_audio_seconds={settings.min_audio_seconds:g} s")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms < settings.silence_rms:
        raise SilentAudioError(f"no speech in {path}: audio RMS {rms:.2e} is below {settings.silence_rms:.0e} (silence)")
    return samples


def prepare_outputs(outputs: dict[str, str | os.PathLike[str] | None]) -> None:
    """Create the missing folders of the outputs ({what: path}) before any work, so that an unusable path fails
    at once with a one-line BadOutputError instead of an errno about a temporary file after the whole video."""
    for what, given in outputs.items():
        if given is None:
            continue
        path = Path(given)
        if path.is_dir():
            raise BadOutputError(f"{what} {path} is a folder; give a file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or type(exc).__name__)
            raise BadOutputError(f"cannot create the folder of the {what} {path}: {why}") from None


def dub(
    video_path: str | os.PathLike[str],
    audio_path: str | os.PathLike[str],
    model: str | os.PathLike[str] | tuple[Config, Generator, UncertaintyModule],
    out_path: str | os.PathLike[str],
    *,
    uncertainty_video: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    overrides: Sequence[str] = (),
    resolution: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Dub `video_path` with the speech of `audio_path`; returns the report (also written to `report`).

    Settings: the model config's `generate` section with `overrides` (`generate.key=value`) applied.
    Output: `out_path` (MP4, the source's size padded to even, yuv420p, 25 fps, the new audio), optionally the
    σ heat-map video and the JSON report, each renamed into place only once everything succeeded; their missing
    folders are created first of all. Raises GenerateError subclasses (one-line messages) for bad input or output
    paths, and ConfigError for bad overrides, before any output file is created.
    """
    t_start = time.perf_counter()
    video_path, audio_path, out_path = Path(video_path), Path(audio_path), Path(out_path)
    prepare_outputs({"output video": out_path, "uncertainty video": uncertainty_video, "report": report})
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise GenerateError("--device cuda but no CUDA device is available")
    cfg, generator, uncertainty = model if isinstance(model, tuple) else load_model(model, torch_device)
    settings = override_config(cfg, overrides, sections=("generate",)).generate
    if cfg.audio.features != "logmel":
        raise UnsupportedModelError("this model takes DeepSpeech audio features (audio.features=deepspeech); generate supports log-mel models only")
    height, width = resolution or model_resolution(cfg, getattr(generator, "trained_stage", None))

    try:
        info = probe(video_path, min_side=1, max_side=1 << 30)
    except VideoError as exc:
        raise BadVideoError(f"unreadable video {video_path} ({exc})") from None
    samples = _read_speech(audio_path, SAMPLE_RATE, settings)
    total = round(len(samples) / SAMPLE_RATE * FPS)
    if total < 1:
        raise BadAudioError(f"audio in {audio_path} is shorter than one frame ({len(samples) / SAMPLE_RATE:.3f} s)")

    # Pass 1: the tracked subject in every source frame (the same pass as preprocessing), then smoothed crop boxes.
    try:
        track = track_video(video_path, FPS, cfg.preprocess)
    except VideoError as exc:
        raise BadVideoError(f"unreadable video {video_path} ({exc})") from None
    landmarks, lost = track.landmarks, track.lost
    n = len(landmarks)
    found = [pts is not None for pts in landmarks]
    if not any(found):
        raise NoFaceError(f"no face found in any of the {n} frames of {video_path}")
    boxes = crop_boxes(landmarks, max_missing=1.0).boxes
    t_landmarks = time.perf_counter()
    log.info("generate: landmarks of %d source frames (%d with a face) in %.1f s; %d frames to generate", n, sum(found), t_landmarks - t_start, total)

    # Pass 2: the reference crops, chosen once per video, each read from a seek.
    ref_idx = reference_indices(found, cfg.generator.num_references, settings.reference_strategy)
    crops = {i: crop_frame(next(iter_frames(video_path, FPS, start=i)), boxes[i], height, width) for i in set(ref_idx)}
    refs = np.concatenate([crops[i] for i in ref_idx], axis=2)  # (h, w, 3R) in reference order
    references = torch.from_numpy(refs).permute(2, 0, 1)[None].float().div(255).to(torch_device)

    rows = features.frame_features(samples, SAMPLE_RATE, total, FPS, cfg.audio.n_mels)
    windows = torch.from_numpy(features.frame_windows(rows, cfg.audio.window))
    mux_audio = read_audio(audio_path, OUT_AUDIO_RATE)
    need = round(total / FPS * OUT_AUDIO_RATE)
    mux_audio = np.pad(mux_audio, (0, max(0, need - len(mux_audio))))[:need]

    codecs = choose_codecs()
    if codecs[0] != "libx264" or codecs[1] != "aac":
        log.warning("H.264 + AAC encoders unavailable in this PyAV build: writing %s + %s in MP4 instead", *codecs)
    writers: list[_Writer] = []
    report_tmp: Path | None = None
    top, left, side = mouth_box(height, width)
    entries: list[dict[str, Any]] = []
    try:
        main = _Writer(out_path, info.width, info.height, codecs, settings.crf, mux_audio)
        writers.append(main)
        heat = None
        if uncertainty_video is not None:
            heat = _Writer(Path(uncertainty_video), info.width, info.height, codecs, settings.crf, mux_audio)
            writers.append(heat)

        def flush(batch: list[tuple[int, int, np.ndarray]]) -> None:
            faces = [k for k, (_, i, _) in enumerate(batch) if found[i]]
            results: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            if faces:
                crops = np.stack([crop_frame(batch[k][2], boxes[batch[k][1]], height, width) for k in faces])
                target = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(torch_device)
                audio = windows[[batch[k][0] for k in faces]].to(torch_device)
                with torch.inference_mode():
                    gen = generator(mask_mouth(target), references.expand(len(faces), -1, -1, -1), audio)
                    unc = uncertainty(gen.image, gen.features)
                images = (gen.image.permute(0, 2, 3, 1) * 255).cpu().numpy()
                sigma = unc.log_sigma[:, 0].exp().cpu().numpy()
                err = unc.error_pred[:, 0].cpu().numpy()
                for r, k in enumerate(faces):
                    results[k] = (images[r], sigma[r], err[r])
            for k, (j, i, frame) in enumerate(batch):
                entry: dict[str, Any] = {"frame": j, "source_frame": i, "face_found": found[i], "tracking_lost": bool(lost[i]), "box": list(pixel_box(boxes[i]))}
                if k in results:
                    image, sigma, err = results[k]
                    out = paste(frame, image, boxes[i], settings.feather)
                    s = float(sigma[top : top + side, left : left + side].mean())
                    e = float(err[top : top + side, left : left + side].mean())
                    conf = math.exp(-e / settings.error_scale)
                    entry.update(sigma_mean=s, error_pred_mean=e, confidence=conf, low_confidence=conf < settings.confidence_threshold)
                    if heat is not None:
                        heat.write(paste(frame, 0.5 * heat_map(sigma, settings.heat_sigma_max) + 0.5 * image, boxes[i], settings.feather))
                else:
                    out = frame
                    entry.update(sigma_mean=None, error_pred_mean=None, confidence=0.0, low_confidence=True)
                    if heat is not None:
                        heat.write(frame)
                main.write(out)
                entries.append(entry)

        batch: list[tuple[int, int, np.ndarray]] = []
        reported = time.perf_counter()
        for j, (i, frame) in enumerate(_source_frames(video_path, n, total, settings.batch_frames)):
            batch.append((j, i, frame))
            if len(batch) == settings.batch_frames:
                flush(batch)
                batch = []
                if time.perf_counter() - reported >= PROGRESS_EVERY_S:
                    reported = time.perf_counter()
                    rate = len(entries) / (reported - t_landmarks)
                    eta = int((total - len(entries)) / rate)
                    log.info("generate: frame %d/%d | %.2f frames/s | eta %d:%02d:%02d", len(entries), total, rate, eta // 3600, eta % 3600 // 60, eta % 60)
        if batch:
            flush(batch)
        if len(entries) != total:
            raise BadVideoError(f"{video_path}: decoding gave {n} frames first, then fewer")
        t_end = time.perf_counter()
        summary = _summary(entries, n, total, codecs, height, width, t_end - t_start, t_end - t_landmarks)
        out_width, out_height = even_size(info.width, info.height)
        summary.update(source_size=[info.height, info.width], output_size=[out_height, out_width])
        result = {
            "video": str(video_path), "audio": str(audio_path), "output": str(out_path),
            "settings": settings.model_dump(), "summary": summary, "frames": entries,
        }
        for w in writers:
            w.finish()
        if report is not None:
            fd, tmp = tempfile.mkstemp(prefix=f".{Path(report).name}.", suffix=".partial", dir=Path(report).parent)
            report_tmp = Path(tmp)
            _default_mode(tmp)
            with os.fdopen(fd, "w") as f:
                json.dump(redact_tree(result), f, indent=1)
        for w in writers[1:]:
            os.replace(w.tmp, w.final)
        if report_tmp is not None:
            os.replace(report_tmp, report)
        os.replace(main.tmp, main.final)
    except BaseException:
        for w in writers:
            w.discard()
        if report_tmp is not None:
            report_tmp.unlink(missing_ok=True)
        raise
    log.info(
        "generate: %d frames (%d source frames, %d without a face, %d low-confidence) at %.1f frames/s -> %s",
        total, n, summary["frames_without_face"], summary["low_confidence_frames"], summary["generate_fps"], out_path,
    )
    return result


def _summary(entries: list[dict[str, Any]], n: int, total: int, codecs: tuple[str, str], h: int, w: int, seconds: float, gen_seconds: float) -> dict[str, Any]:
    def stats(key: str) -> dict[str, float] | None:
        values = np.array([e[key] for e in entries if e["face_found"]], dtype=np.float64)
        if values.size == 0:
            return None
        return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()), "p10": float(np.percentile(values, 10)), "p90": float(np.percentile(values, 90))}

    low = sum(e["low_confidence"] for e in entries)
    return {
        "frames": total,
        "fps": FPS,
        "duration_s": total / FPS,
        "source_frames": n,
        "looped": total > n,
        "frames_without_face": sum(not e["face_found"] for e in entries),
        "tracking_lost_frames": sum(e["tracking_lost"] for e in entries),
        "low_confidence_frames": low,
        "low_confidence_fraction": low / max(total, 1),
        "confidence": stats("confidence"),
        "sigma_mean": stats("sigma_mean"),
        "error_pred_mean": stats("error_pred_mean"),
        "crop_size": [h, w],
        "codecs": list(codecs),
        "seconds": seconds,
        "generate_fps": total / max(gen_seconds, 1e-9),
    }
