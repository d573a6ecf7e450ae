"""`dub`: the three passes of `julnet generate` over a video (see the package docstring), and its report."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from julnet.config import Config, GenerateConfig, check_epistemic_video, override_config
from julnet.data import audio as features
from julnet.data.crop import crop_boxes, crop_frame, pixel_box
from julnet.data.examples import draw_references
from julnet.data.references import reference_indices
from julnet.data.track import track_video
from julnet.data.video import FPS, SAMPLE_RATE, VideoError, VideoInfo, iter_frames, probe, read_audio
from julnet.errors import BadAudioError, BadVideoError, GenerateError, InputNotFoundError, NoFaceError, UnsupportedModelError
from julnet.evaluation.epistemic import reference_spread
from julnet.face import mask_mouth, mouth_box
from julnet.inference.composite import heat_map, mouth_rect, paste
from julnet.inference.media import (
    OUT_AUDIO_RATE, Background, VideoWriter, check_speech, choose_codecs, default_mode, even_size, prefetch, prefetch_depth, read_speech,
    source_frames,
)
from julnet.models.blocks import fold_batch_norm
from julnet.models.talking_face import TalkingFace
from julnet.paths import check_outputs, output_folders
from julnet.progress import Progress
from julnet.redact import redact_tree
from julnet.models.trained import load_model, model_resolution

log = logging.getLogger(__name__)


@dataclass
class _Faces:
    """Pass 1's result: per source frame the crop box, whether a face was found to dub, whether tracking was lost and
    whether the face jumped (found, but further from the frame before's than a face moves: not dubbed)."""

    boxes: np.ndarray
    found: list[bool]
    lost: list[bool]
    jumped: list[bool]


@dataclass
class _Model:
    """What generation needs per batch: the networks, the fixed references and audio windows, the crop size."""

    face: TalkingFace
    references: torch.Tensor  # (1, 3R, h, w)
    resampled: torch.Tensor | None  # (K − 1, 3R, h, w): the other reference sets of the epistemic map, or None when off
    windows: torch.Tensor  # (total, window, n_mels)
    height: int
    width: int
    device: torch.device
    model_seconds: float = 0.0  # time in the networks so far (inputs to the device and outputs back included)


def dub(
    video_path: str | os.PathLike[str],
    audio_path: str | os.PathLike[str],
    model: str | os.PathLike[str] | tuple[Config, TalkingFace],
    out_path: str | os.PathLike[str],
    *,
    uncertainty_video: str | os.PathLike[str] | None = None,
    epistemic_video: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    overrides: Sequence[str] = (),
    resolution: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Dub `video_path` with the speech of `audio_path`; returns the report (also written to `report`).

    Settings: the model config's `generate` section with `overrides` (`generate.key=value`) applied.
    Output: `out_path` (MP4, the source's size padded to even, yuv420p, 25 fps, the new audio), optionally the
    σ heat-map video, the epistemic heat-map video (needs generate.epistemic_samples >= 2) and the JSON report,
    each renamed into place only once everything succeeded.
    First of all, before the model loads: no output may be the same file as an input or another output, nor
    replace an existing file unless `overwrite` (julnet.paths); the outputs' missing folders are created and must
    take a new file; the video is probed and the speech decoded. Raises GenerateError subclasses (one-line
    messages) for bad input or output paths, and ConfigError for bad overrides, before any output file is created;
    when it fails, the folders it created are removed again.
    """
    t_start = time.perf_counter()
    video_path, audio_path, out_path = Path(video_path), Path(audio_path), Path(out_path)
    writes = {"output video": out_path, "uncertainty video": uncertainty_video, "epistemic video": epistemic_video, "report": report}
    check_outputs({"video": video_path, "audio": audio_path, "model": None if isinstance(model, tuple) else model}, writes, overwrite)
    with output_folders(writes):
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise GenerateError("--device cuda but no CUDA device is available")
        info = _probe_video(video_path)
        samples = read_speech(audio_path, SAMPLE_RATE)
        cfg, face = model if isinstance(model, tuple) else load_model(model, torch_device)
        face = fold_batch_norm(face)  # a no-op for a model loaded with folded=True
        settings = override_config(cfg, overrides, sections=("generate",)).generate
        if epistemic_video is not None:
            check_epistemic_video(settings)
        if cfg.audio.features != "logmel":
            raise UnsupportedModelError("this model takes DeepSpeech audio features (audio.features=deepspeech); generate supports log-mel models only")
        height, width = resolution or model_resolution(cfg, face.trained_stage)
        check_speech(samples, SAMPLE_RATE, audio_path, settings)
        total = round(len(samples) / SAMPLE_RATE * FPS)
        if total < 1:
            raise BadAudioError(f"audio in {audio_path} is shorter than one frame ({len(samples) / SAMPLE_RATE:.3f} s)")

        faces = _track(video_path, cfg)
        n = len(faces.found)
        t_landmarks = time.perf_counter()
        log.info("generate: landmarks of %d source frames (%d with a face) in %.1f s; %d frames to generate", n, sum(faces.found), t_landmarks - t_start, total)
        refs = _references(video_path, faces, cfg.generator.num_references, settings, height, width).to(torch_device)
        windows = torch.from_numpy(features.frame_windows(features.frame_features(samples, SAMPLE_RATE, total, FPS, cfg.audio.n_mels), cfg.audio.window))
        net = _Model(face, refs[:1], refs[1:] if len(refs) > 1 else None, windows, height, width, torch_device)
        mux_audio = read_audio(audio_path, OUT_AUDIO_RATE)
        need = round(total / FPS * OUT_AUDIO_RATE)
        mux_audio = np.pad(mux_audio, (0, max(0, need - len(mux_audio))))[:need]

        outputs = _Outputs(out_path, {"sigma": uncertainty_video, "epistemic": epistemic_video}, report, (info.width, info.height), settings.crf, mux_audio)
        try:
            entries = _generate(video_path, total, faces, net, settings, outputs)
            t_end = time.perf_counter()
            summary = _summary(entries, n, net.resampled is not None)
            out_width, out_height = even_size(info.width, info.height)
            summary.update(crop_size=[width, height], codecs=list(outputs.codecs), source_size=[info.width, info.height],
                           output_size=[out_width, out_height], **_speed(summary, t_end - t_start, t_end - t_landmarks, net.model_seconds))
            result = {
                "video": str(video_path), "audio": str(audio_path), "output": str(out_path),
                "settings": settings.model_dump(), "summary": summary, "frames": entries,
            }
            outputs.commit(result)
        except BaseException:
            outputs.discard()
            raise
    log.info(
        "generate: %d frames (%d source frames, %d without a face, %d low-confidence) at %.1f frames/s -> %s",
        total, n, summary["frames_without_face"], summary["low_confidence_frames"], summary["generate_fps"], out_path,
    )
    return result


def _probe_video(path: Path) -> VideoInfo:
    """The video's stream facts, or a one-line error when it is missing or no video PyAV decodes."""
    try:
        return probe(path, min_side=1, max_side=1 << 30)
    except VideoError as exc:
        if exc.reason == "not_found":
            raise InputNotFoundError(f"video not found: {path}") from None
        raise BadVideoError(f"unreadable video {path} ({exc})") from None


class _Outputs:
    """The output video, and optionally the heat-map videos (by map name: sigma, epistemic) and the report, under
    hidden temporary names until commit() renames them into place (the output video last); discard() removes them."""

    def __init__(self, out: Path, heats: dict[str, str | os.PathLike[str] | None], report: str | os.PathLike[str] | None,
                 size: tuple[int, int], crf: int, mux_audio: np.ndarray) -> None:
        self.codecs = choose_codecs()
        if self.codecs != ("libx264", "aac"):
            log.warning("H.264 + AAC encoders unavailable in this PyAV build: writing %s + %s in MP4 instead", *self.codecs)
        self.report, self.report_tmp = report, None
        self.writers: list[VideoWriter] = []
        self.heats: dict[str, VideoWriter] = {}
        try:
            self.main = VideoWriter(out, *size, self.codecs, crf, mux_audio)
            self.writers.append(self.main)
            for name, path in heats.items():
                if path is not None:
                    self.heats[name] = VideoWriter(Path(path), *size, self.codecs, crf, mux_audio)
                    self.writers.append(self.heats[name])
        except BaseException:
            self.discard()
            raise

    def write(self, frame: np.ndarray, heat_frames: dict[str, np.ndarray]) -> None:
        self.main.write(frame)
        for name, writer in self.heats.items():
            writer.write(heat_frames[name])

    def commit(self, result: dict[str, Any]) -> None:
        for w in self.writers:
            w.finish()
        if self.report is not None:
            self.report_tmp = _write_report_tmp(Path(self.report), result)
        for w in self.writers[1:]:
            os.replace(w.tmp, w.final)
        if self.report_tmp is not None:
            os.replace(self.report_tmp, self.report)
        os.replace(self.main.tmp, self.main.final)

    def discard(self) -> None:
        for w in self.writers:
            w.discard()
        if self.report_tmp is not None:
            self.report_tmp.unlink(missing_ok=True)


def _generate(video_path: Path, total: int, faces: _Faces, net: _Model, settings: GenerateConfig, outputs: _Outputs) -> list[dict[str, Any]]:
    """Pass 3: every output frame generated `batch_frames` at a time and written as it comes; the report entries."""
    n, entries = len(faces.found), []
    progress = Progress("[generate]", total, "frames", logger=log)
    batch: list[tuple[int, int, np.ndarray]] = []
    # Decoding and encoding run on their own threads, up to one batch ahead (fewer large frames) / behind the networks.
    depth = prefetch_depth(settings.batch_frames, outputs.main.video.width, outputs.main.video.height)
    frames = prefetch(source_frames(video_path, n, total, settings.batch_frames), depth)
    with closing(frames), Background(settings.batch_frames, "julnet-encode") as encoder:
        for j, (i, frame) in enumerate(frames):
            batch.append((j, i, frame))
            if len(batch) == settings.batch_frames or j == total - 1:
                for out, heat_frames, entry in _dub_batch(batch, faces, net, settings, set(outputs.heats)):
                    encoder.submit(outputs.write, out, heat_frames)
                    entries.append(entry)
                progress.update(len(entries))
                batch = []
    if len(entries) != total:
        raise BadVideoError(f"{video_path}: decoding gave {n} frames first, then fewer")
    progress.close()
    return entries


def _track(video_path: Path, cfg: Config) -> _Faces:
    """Pass 1: the tracked subject in every source frame (the same pass as preprocessing), then smoothed crop boxes."""
    try:
        track = track_video(video_path, FPS, cfg.preprocess)
    except VideoError as exc:
        raise BadVideoError(f"unreadable video {video_path} ({exc})") from None
    found = [pts is not None and not jumped for pts, jumped in zip(track.landmarks, track.jumped)]
    if not any(found):
        raise NoFaceError(f"no face found in any of the {len(found)} frames of {video_path}")
    return _Faces(crop_boxes(track.landmarks, max_missing=1.0).boxes, found, track.lost, track.jumped)


def _references(video_path: Path, faces: _Faces, count: int, settings: GenerateConfig, height: int, width: int) -> torch.Tensor:
    """Pass 2: reference crops (S, 3R, h, w) in [0, 1] among frames with a face, each frame read from one seek: set 0,
    the output's, by `reference_strategy`; with the epistemic map, K − 1 more drawn with `epistemic_seed` (S = max(K, 1))."""
    rng, usable = np.random.default_rng(settings.epistemic_seed), np.array(faces.found)
    sets = [reference_indices(faces.found, count, settings.reference_strategy)]
    sets += [draw_references(rng, count, range(0), len(usable), usable).tolist() for _ in range(settings.epistemic_samples - 1)]
    crops = {i: crop_frame(next(iter_frames(video_path, FPS, start=i)), faces.boxes[i], height, width) for i in {i for s in sets for i in s}}
    refs = np.stack([np.concatenate([crops[i] for i in s], axis=2) for s in sets])  # (S, h, w, 3R) in reference order
    return torch.from_numpy(refs).permute(0, 3, 1, 2).float().div(255)


def _dub_batch(
    batch: list[tuple[int, int, np.ndarray]], faces: _Faces, net: _Model, settings: GenerateConfig, heats: set[str]
) -> list[tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]]:
    """Pass 3 for a batch of (output index, source index, frame): (output frame, heat-map frames by name, report entry) each.

    The frames with a face go through the generator and the uncertainty module together (and, with the epistemic
    map, the generator again on the other reference sets); the statistics and the heat maps cover the mouth region,
    the only part pasted back. Frames without a face to dub (lost, or jumped) pass through, flagged."""
    with_face = [k for k, (_, i, _) in enumerate(batch) if faces.found[i]]
    results: dict[int, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]] = {}
    if with_face:
        crops = np.stack([crop_frame(batch[k][2], faces.boxes[batch[k][1]], net.height, net.width) for k in with_face])
        t_model = time.perf_counter()
        target = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(net.device)
        audio = net.windows[[batch[k][0] for k in with_face]].to(net.device)
        with torch.inference_mode():
            source = mask_mouth(target)
            gen, unc = net.face(source, net.references.expand(len(with_face), -1, -1, -1), audio)
            maps = {"sigma": unc.log_sigma[:, 0].exp().cpu().numpy()}
            if net.resampled is not None:
                resampled = net.resampled[:, None].expand(-1, len(with_face), -1, -1, -1)
                maps["epistemic"] = reference_spread(net.face.generator, gen.image, source, resampled, audio)[:, 0].cpu().numpy()
        images = (gen.image.permute(0, 2, 3, 1) * 255).cpu().numpy()
        err = unc.error_pred[:, 0].cpu().numpy()
        results = {k: (images[r], {name: m[r] for name, m in maps.items()}, err[r]) for r, k in enumerate(with_face)}
        net.model_seconds += time.perf_counter() - t_model
    top, left, side = mouth_box(net.height, net.width)
    scales = {"sigma": settings.heat_sigma_max, "epistemic": settings.heat_epistemic_max}
    out: list[tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]] = []
    for k, (j, i, frame) in enumerate(batch):
        entry: dict[str, Any] = {"frame": j, "source_frame": i, "face_found": faces.found[i], "tracking_lost": faces.lost[i],
                                 "face_jumped": faces.jumped[i],
                                 "box": list(pixel_box(faces.boxes[i])), "mouth_box": list(mouth_rect(faces.boxes[i], net.height, net.width))}
        if k not in results:
            entry.update(sigma_mean=None, error_pred_mean=None, confidence=0.0, low_confidence=True)
            if net.resampled is not None:
                entry["epistemic_mean"] = None
            out.append((frame, {name: frame for name in heats}, entry))
            continue
        image, frame_maps, err = results[k]
        means = {f"{name}_mean": float(m[top : top + side, left : left + side].mean()) for name, m in frame_maps.items()}
        e = float(err[top : top + side, left : left + side].mean())
        conf = math.exp(-e / settings.error_scale)
        entry.update(sigma_mean=means.pop("sigma_mean"), error_pred_mean=e, confidence=conf, low_confidence=conf < settings.confidence_threshold, **means)
        heat_frames = {name: paste(frame, 0.5 * heat_map(frame_maps[name], scales[name]) + 0.5 * image, faces.boxes[i], settings.feather) for name in heats}
        out.append((paste(frame, image, faces.boxes[i], settings.feather), heat_frames, entry))
    return out


def _write_report_tmp(report: Path, result: dict[str, Any]) -> Path:
    """The report (redacted) under a temporary name beside `report`, for the caller to rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{report.name}.", suffix=".partial", dir=report.parent)
    default_mode(tmp)
    with os.fdopen(fd, "w") as f:
        json.dump(redact_tree(result), f, indent=1)
    return Path(tmp)


def _summary(entries: list[dict[str, Any]], n: int, epistemic: bool) -> dict[str, Any]:
    """The report's per-video figures from its per-frame entries (one per output frame; `n` source frames)."""

    def stats(key: str) -> dict[str, float] | None:
        values = np.array([e[key] for e in entries if e["face_found"]], dtype=np.float64)
        if values.size == 0:
            return None
        return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()), "p10": float(np.percentile(values, 10)), "p90": float(np.percentile(values, 90))}

    total = len(entries)
    low = sum(e["low_confidence"] for e in entries)
    return {
        "frames": total,
        "fps": FPS,
        "duration_s": total / FPS,
        "source_frames": n,
        "looped": total > n,
        "frames_without_face": sum(not e["face_found"] for e in entries),
        "tracking_lost_frames": sum(e["tracking_lost"] for e in entries),
        "face_jumped_frames": sum(e["face_jumped"] for e in entries),
        "low_confidence_frames": low,
        "low_confidence_fraction": low / max(total, 1),
        "confidence": stats("confidence"),
        "sigma_mean": stats("sigma_mean"),
        "error_pred_mean": stats("error_pred_mean"),
        **({"epistemic_mean": stats("epistemic_mean")} if epistemic else {}),
    }


def _speed(summary: dict[str, Any], seconds: float, gen_seconds: float, model_seconds: float) -> dict[str, Any]:
    """Frames/s end to end, after the landmark pass (generate) and of the networks alone (frames with a face)."""
    total, with_face = summary["frames"], summary["frames"] - summary["frames_without_face"]
    return {
        "seconds": seconds,
        "generate_fps": total / max(gen_seconds, 1e-9),
        "end_to_end_fps": total / max(seconds, 1e-9),
        "model_seconds": model_seconds,
        "model_fps": with_face / model_seconds if model_seconds > 0 else None,
    }
