"""The evaluation suite: one model on a dataset's held-out split, the same code for every candidate.

Frames are walked video by video in order (`julnet.evaluation.heldout`), generated one frame at a time (so no
number depends on the batch size), and measured in batches: PSNR over the face crop and the mouth region,
LPIPS and FID (when their networks' weights are configured),
LSE-D/C per video over the generated mouths (the expert SyncNet against the source video's raw audio, else
the project's own SyncNet against the shards' audio windows, named `_own`), and how well σ (and the predicted
error ε̂) rank the true error: Spearman and the sparsification curve / AUSE, per frame over all pixels, averaged over frames;
with `evaluation.epistemic_samples` K >= 2, the same for the epistemic map (julnet.evaluation.epistemic) and its frame-level AURC.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from julnet.config import Config, load_config, override_config
from julnet.data.manifest import VideoEntry, manifest_sha256, read_manifest
from julnet.data.preprocess import read_source_audio
from julnet.data.video import VideoError
from julnet.evaluation.baselines import is_baseline, load_baseline
from julnet.evaluation.calibration import (
    COVERAGE_LEVELS,
    UCE_BINS,
    aurc,
    reliability,
    interval_coverage,
    nll_laplace,
    random_gain,
    sparsification,
    spearman,
)
from julnet.evaluation.epistemic import reference_spread
from julnet.evaluation.expert_syncnet import (
    CLIP_FRAMES,
    FPS,
    SAMPLE_RATE,
    ExpertSyncNet,
    audio_mfcc,
    audio_windows,
    clip_count,
    expert_frames,
    load_expert_syncnet,
)
from julnet.evaluation.fid import FeatureExtractor, RunningStatistics, frechet_distance, load_fid_extractor
from julnet.evaluation.heldout import plan_videos, video_batches
from julnet.evaluation.inception import FIDInceptionV3
from julnet.evaluation.lpips import LPIPS, load_lpips
from julnet.evaluation.result import EvaluationResult
from julnet.evaluation.sync import lse
from julnet.evaluation.unavailable import Unavailable
from julnet.face import crop_mouth, mouth_box
from julnet.losses.psnr import mouth_psnr, psnr
from julnet.losses.uncertainty import error_map
from julnet.models.blocks import fold_batch_norm
from julnet.models.syncnet import SyncNet
from julnet.models.talking_face import TalkingFace
from julnet.pretrained import read_state_dict
from julnet.progress import Progress
from julnet.models.build import resolve_device
from julnet.data.frames import Frames, flatten_batch
from julnet.models.trained import load_model, model_resolution
from julnet.version import code_version

log = logging.getLogger(__name__)

LoadedModel = tuple[Config, TalkingFace]


@dataclass
class SyncJudge:
    """The SyncNet that scores lip sync, and whether it is the reference (expert) one or the project's own."""

    net: SyncNet | ExpertSyncNet
    source: Literal["expert", "own"]
    weights: str
    why_not_expert: str | None = None

    @property
    def suffix(self) -> str:
        """Metric-name suffix: own-SyncNet LSE is never named like the expert's."""
        return "" if self.source == "expert" else "_own"


@dataclass
class Judges:
    """The pretrained networks behind LPIPS, FID and LSE, or why each is unavailable; load once, reuse per candidate."""

    lpips: LPIPS | Unavailable
    fid: FeatureExtractor | Unavailable
    sync: SyncJudge | Unavailable


def load_judges(settings: Config, device: torch.device | str = "cpu") -> Judges:
    """The metric networks from `settings.evaluation` (and `settings.syncnet` for the own-SyncNet LSE); never random."""
    ev = settings.evaluation
    lpips = load_lpips(ev.lpips_vgg16)
    fid = load_fid_extractor(ev.fid_inception)
    return Judges(
        lpips=lpips.to(device) if isinstance(lpips, LPIPS) else lpips,
        fid=fid.to(device) if isinstance(fid, FIDInceptionV3) else fid,
        sync=_sync_judge(settings, device),
    )


def _sync_judge(settings: Config, device: torch.device | str) -> SyncJudge | Unavailable:
    """The expert SyncNet, else (when allowed) the project's own with configured weights, else why neither."""
    expert = load_expert_syncnet(settings.evaluation.expert_syncnet)
    if isinstance(expert, ExpertSyncNet):
        return SyncJudge(expert.to(device), "expert", str(settings.evaluation.expert_syncnet.path))
    weights = settings.syncnet.weights
    if not settings.evaluation.own_syncnet_lse:
        return Unavailable(f"{expert.reason}; the project's own SyncNet is off (evaluation.own_syncnet_lse=false)")
    if weights.path is None:
        random_note = " (its allow_random_init is never used for evaluation)" if weights.allow_random_init else ""
        return Unavailable(f"{expert.reason}; the project's own SyncNet has no weights: set syncnet.weights.path{random_note}")
    net = SyncNet(settings, settings.audio.window)
    try:
        net.load_state_dict(read_state_dict(weights, "SyncNet", "syncnet.weights", settings.tracking.uri))
    except RuntimeError as exc:
        raise ValueError(f"syncnet.weights.path={weights.path} does not fit the configured SyncNet ({str(exc).splitlines()[0]})") from None
    return SyncJudge(net.requires_grad_(False).eval().to(device), "own", weights.path, expert.reason)


def evaluate(
    model: str | os.PathLike[str] | LoadedModel,
    data_uri: str,
    settings: Config,
    *,
    device: str | torch.device = "cpu",
    model_id: str | None = None,
    judges: Judges | None = None,
) -> EvaluationResult:
    """Measure a model on `settings.evaluation.split` of the dataset at `data_uri` (a manifest URI).

    `model` is anything `julnet.models.trained.load_model` accepts, or an already loaded (config, talking
    face) pair (then put in eval mode on `device`; `model_id` names it in the result). `judges`
    lets a caller load the metric networks once for several candidates.
    """
    ev = settings.evaluation
    torch_device = resolve_device(str(device))
    if isinstance(model, tuple):
        model_cfg, face = model
        face = face.to(torch_device).eval()
        label = model_id or "in-memory model"
    else:
        model_cfg, face = load_model(model, torch_device)
        label = model_id or os.fspath(model)
    manifest = read_manifest(data_uri)
    _check_audio(manifest.settings, model_cfg, "the model's config")
    judges = judges or load_judges(settings, torch_device)
    if isinstance(judges.sync, SyncJudge) and judges.sync.source == "own":
        _check_audio(manifest.settings, settings, "the evaluation config (its SyncNet)")
    stage = face.trained_stage
    size = model_resolution(model_cfg, stage)
    model_sha256 = weights_sha256(face.generator, face.uncertainty)
    face = fold_batch_norm(face)
    plans = plan_videos(data_uri, ev)
    videos = {v.id: v for v in manifest.videos}
    total = sum(p.frames for p in plans)
    log.info("evaluate %s on %s (%s split by %s): %d videos, %d frames at %dx%d", label, data_uri, ev.split, ev.split_by, len(plans), total, *size)

    meter = _Meter(judges, ev.sparsification_steps, ev.lse_max_offset, settings.audio.window, epistemic=ev.epistemic_samples > 0)
    lines, t0 = Progress("[evaluate]", total, "frames", logger=log), time.perf_counter()
    with torch.inference_mode():
        for plan in plans:
            meter.start_video(videos[plan.video_id], plan.frames)
            for chunk in video_batches(plan, ev, size, model_cfg.generator.num_references):
                if not chunk.usable.any():  # nothing to score; a faceless frame ends the LSE stretch anyway
                    meter.skip(len(chunk.usable))
                    lines.update(meter.frames + meter.faceless_frames)
                    continue
                frames = flatten_batch(chunk.batch, "frame", torch_device)
                image, sigma, error_pred = _predict(face, frames)
                epistemic = None if chunk.resampled is None else _epistemic(face.generator, frames, image, chunk.resampled)
                meter.add(image, frames.target, sigma, error_pred, frames.audio, chunk.usable, chunk.first_frame, epistemic)
                lines.update(meter.frames + meter.faceless_frames)
            meter.end_video()
    lines.close()
    seconds = time.perf_counter() - t0
    metrics, unavailable, curves, calibration_curves = meter.results()
    sync = judges.sync
    return EvaluationResult(
        model=label,
        model_sha256=model_sha256,
        model_stage=stage,
        resolution=[size[1], size[0]],  # (height, width) to [width, height]
        data=data_uri,
        data_sha256=manifest_sha256(data_uri),
        split=ev.split,
        split_by=ev.split_by,
        code_version=code_version(),
        lse_source=sync.source if isinstance(sync, SyncJudge) else None,
        networks={
            "lpips": None if isinstance(judges.lpips, Unavailable) else ev.lpips_vgg16.path,
            "fid": None if isinstance(judges.fid, Unavailable) else ev.fid_inception.path,
            "lse": sync.weights if isinstance(sync, SyncJudge) else None,
            "lse_sha256": weights_sha256(sync.net) if isinstance(sync, SyncJudge) else None,
        },
        metrics=metrics,
        unavailable=unavailable,
        counts={"videos": len(plans), "frames": meter.frames, "faceless_frames": meter.faceless_frames, "lse_videos": meter.lse_videos,
                "calibration_frames": meter.calibration_frames},
        sparsification=curves,
        calibration_curves=calibration_curves,
        settings=ev.model_dump(mode="json"),
        seconds=seconds,
    )


def _check_audio(dataset: dict, cfg: Config, whose: str) -> None:
    """The dataset's audio features must be what a network was built for."""
    have = (dataset["audio_features"], dataset["audio_dim"], dataset["audio_window"])
    want = (cfg.audio.features, cfg.audio.dim, cfg.audio.window)
    if have != want:
        raise ValueError(f"dataset audio (features, dim, window) = {have} but {whose} expects {want}")


def weights_sha256(*modules: nn.Module) -> str:
    """sha256 over the modules' state dicts (names, dtypes, shapes, values): the identity of a model's weights."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _VideoSync:
    """LSE of one video from its generated frames as they stream in: clips of `window` consecutive mouths,
    each with the audio window of its centre frame (which covers exactly those frames)."""

    def __init__(self, judge: SyncJudge, window: int):
        self.judge, self.window = judge, window
        self.mouths: Tensor | None = None  # the last window-1 frames' mouths, carried into the next batch
        self.audio: Tensor | None = None
        self.video_embeddings: list[Tensor] = []
        self.audio_embeddings: list[Tensor] = []

    def add(self, generated: Tensor, audio: Tensor) -> None:
        mouths = crop_mouth(generated, self.judge.net.mouth_size)
        if self.mouths is not None:
            mouths, audio = torch.cat([self.mouths, mouths]), torch.cat([self.audio, audio])
        clips = len(mouths) - self.window + 1
        if clips > 0:
            stacked = mouths.unfold(0, self.window, 1).permute(0, 4, 1, 2, 3).flatten(1, 2)  # (clips, 3*window, m, m)
            centre = self.window // 2
            self.video_embeddings.append(self.judge.net.embed_face(stacked))
            self.audio_embeddings.append(self.judge.net.embed_audio(audio[centre : centre + clips]))
        self.mouths, self.audio = mouths[-(self.window - 1) :], audio[-(self.window - 1) :]

    def lse(self, max_offset: int) -> dict[str, float | int] | None:
        if not self.video_embeddings:
            return None
        return lse(torch.cat(self.video_embeddings).cpu(), torch.cat(self.audio_embeddings).cpu(), max_offset)


class _ExpertVideoSync:
    """Expert LSE of one stretch of a video as syncnet_python scores it (`julnet.evaluation.expert_syncnet`): clip i
    is generated frames i..i+4 against MFCC rows 4i..4i+19 of the source's audio (i counted from the video's start,
    the stretch starting at frame `first`), for clips below `clips` (clip_count of the whole video)."""

    def __init__(self, net: ExpertSyncNet, mfcc: np.ndarray, first: int, clips: int):
        self.net, self.mfcc, self.clips, self.start = net, mfcc, clips, first
        self.carried: Tensor | None = None  # the last CLIP_FRAMES - 1 frames, for clips that span two batches
        self.first = first  # index in the video of the first carried / incoming frame
        self.video_embeddings: list[Tensor] = []
        self.audio_embeddings: list[Tensor] = []

    def add(self, generated: Tensor, audio: Tensor) -> None:
        """Embed the clips that end within these frames; `audio` (the shards' log-mel windows) is not used."""
        frames = expert_frames(generated)
        if self.carried is not None:
            frames = torch.cat([self.carried, frames])
        done = self.start + sum(len(e) for e in self.video_embeddings)  # the next clip's index in the video
        count = min(self.clips, self.first + len(frames) - CLIP_FRAMES + 1) - done
        if count > 0:
            local = torch.arange(done - self.first, done - self.first + count)[:, None] + torch.arange(CLIP_FRAMES)
            clips = frames[local].permute(0, 2, 1, 3, 4)  # (count, 3, 5, 224, 224)
            self.video_embeddings.append(self.net.embed_video(clips))
            self.audio_embeddings.append(self.net.embed_audio(audio_windows(self.mfcc, done, count).to(frames.device)))
        self.carried = frames[-(CLIP_FRAMES - 1) :]
        self.first += len(frames) - len(self.carried)

    def lse(self, max_offset: int) -> dict[str, float | int] | None:
        if not self.video_embeddings:
            return None
        return lse(torch.cat(self.video_embeddings).cpu(), torch.cat(self.audio_embeddings).cpu(), max_offset)


def _predict(face: TalkingFace, frames: Frames) -> tuple[Tensor, Tensor, Tensor]:
    """Generated images, σ and ε̂, one frame at a time: float32 kernels are chosen by batch shape, so a batched
    forward moves σ by ~1e-6 with `evaluation.batch_size`, and AUSE, which ranks σ, would move with it."""
    images, sigmas, errors = [], [], []
    for i in range(len(frames.source)):
        out, unc = face(frames.source[i : i + 1], frames.references[i : i + 1], frames.audio[i : i + 1])
        images.append(out.image)
        sigmas.append(unc.log_sigma.exp())
        errors.append(unc.error_pred)
    return torch.cat(images), torch.cat(sigmas), torch.cat(errors)


def _epistemic(generator: nn.Module, frames: Frames, images: Tensor, resampled: Tensor) -> Tensor:
    """The epistemic map of each frame, one frame at a time like `_predict` (its K − 1 extra passes as one batch)."""
    others = resampled.to(images.device).float().div(255)  # (B, K − 1, 3R, H, W)
    return torch.cat([
        reference_spread(generator, images[i : i + 1], frames.source[i : i + 1], others[i][:, None], frames.audio[i : i + 1])
        for i in range(len(images))
    ])


class _Meter:
    """Running sums of every metric over the frames seen so far."""

    def __init__(self, judges: Judges, steps: int, max_offset: int, window: int, epistemic: bool = False):
        self.judges, self.steps, self.max_offset, self.window = judges, steps, max_offset, window
        self.frames = 0
        self.sums = {"psnr": 0.0, "psnr_mouth": 0.0, "lpips": 0.0}
        self.generated_features, self.real_features = RunningStatistics(), RunningStatistics()  # O(D²) memory, any frame count
        self.rankers = ("sigma", "error_pred", "epistemic") if epistemic else ("sigma", "error_pred")  # maps ranked against ε
        self.calibration: dict[str, list[float]] = {
            f"{metric}_{name}": [] for metric in ("spearman", "ause", "aurg") for name in self.rankers
        } | {"nll_sigma": [], "uce_sigma": []}
        self.mouth_epistemic: list[float] = []  # per frame: the epistemic map's mean over the mouth box
        self.reliability: np.ndarray | None = None  # (2, bins): summed per-frame mean σ and mean |ε| of each σ bin
        self.coverage: dict[float, list[float]] = {p: [] for p in COVERAGE_LEVELS}  # per frame; reported as |mean − p|
        self.mouth_errors: list[tuple[float, float]] = []  # per frame over the mouth box: (mean ε̂, mean true error)
        self.curves: dict[str, np.ndarray] = {}
        self.calibration_frames = 0
        self.faceless_frames = 0  # held-out frames without the subject's landmarks: never scored
        self.new_stretch: Callable[[int], _VideoSync | _ExpertVideoSync] | None = None  # LSE scorer of a stretch from frame i
        self.stretch: _VideoSync | _ExpertVideoSync | None = None
        self.stretch_rows: list[tuple[int, dict[str, float | int]]] = []  # (clips, LSE) of the current video's stretches
        self.lse_rows: list[dict[str, float | int]] = []
        self.no_expert_audio: str | None = None  # why some video's raw audio could not be used: no expert LSE at all

    @property
    def lse_videos(self) -> int:
        return len(self.lse_rows)

    def start_video(self, video: VideoEntry, frames: int) -> None:
        sync = self.judges.sync
        if not isinstance(sync, SyncJudge):
            return
        if sync.source == "own":
            self.new_stretch = lambda first: _VideoSync(sync, self.window)
        elif self.no_expert_audio is None:
            samples, self.no_expert_audio = _expert_audio(video)
            if samples is None:
                self.lse_rows.clear()  # no expert LSE at all, so no video counts as scored
            else:
                mfcc, clips = audio_mfcc(samples), clip_count(frames, len(samples))
                self.new_stretch = lambda first: _ExpertVideoSync(sync.net, mfcc, first, clips)

    def end_video(self) -> None:
        """A video's LSE: its stretches' LSE-D and LSE-C weighted by their clips, the longest stretch's offset."""
        self._end_stretch()
        if self.stretch_rows:
            total = sum(n for n, _ in self.stretch_rows)
            row = {key: sum(n * r[key] for n, r in self.stretch_rows) / total for key in ("lse_d", "lse_c")}
            self.lse_rows.append({**row, "offset": max(self.stretch_rows, key=lambda nr: nr[0])[1]["offset"]})
        self.new_stretch, self.stretch_rows = None, []

    def _sync(self, generated: Tensor, audio: Tensor, usable: Tensor, first_frame: int) -> None:
        """Feed the LSE scorer runs of frames with a face; a faceless frame ends the stretch (its clips would
        score a mouth that is not there), and the next face starts a new one."""
        if self.new_stretch is None:
            return
        flags, k = usable.tolist(), 0
        while k < len(flags):
            if not flags[k]:
                self._end_stretch()
                k += 1
                continue
            end = k
            while end < len(flags) and flags[end]:
                end += 1
            if self.stretch is None:
                self.stretch = self.new_stretch(first_frame + k)
            self.stretch.add(generated[k:end], audio[k:end])
            k = end

    def skip(self, frames: int) -> None:
        """Faceless frames not generated at all: counted, and the LSE stretch ends."""
        self._end_stretch()
        self.faceless_frames += frames

    def _end_stretch(self) -> None:
        if self.stretch is not None and (row := self.stretch.lse(self.max_offset)) is not None:
            self.stretch_rows.append((sum(len(e) for e in self.stretch.video_embeddings), row))
        self.stretch = None

    def add(
        self, generated: Tensor, target: Tensor, sigma: Tensor, error_pred: Tensor, audio: Tensor, usable: Tensor, first_frame: int,
        epistemic: Tensor | None = None,
    ) -> None:
        """One batch of consecutive frames of the current video from `first_frame`; only those with a face
        (`usable`) are scored: a faceless held-out frame has no mouth to compare."""
        self._sync(generated, audio, usable, first_frame)
        self.faceless_frames += int((~usable).sum())
        if not usable.all():
            generated, target, sigma, error_pred = generated[usable], target[usable], sigma[usable], error_pred[usable]
            epistemic = None if epistemic is None else epistemic[usable]
        b = len(generated)
        if b == 0:
            return
        self.frames += b
        self.sums["psnr"] += psnr(generated, target) * b
        self.sums["psnr_mouth"] += mouth_psnr(generated, target) * b
        if isinstance(self.judges.lpips, LPIPS):
            self.sums["lpips"] += float(self.judges.lpips(generated, target).sum())
        if not isinstance(self.judges.fid, Unavailable):
            self.generated_features.add(self.judges.fid(generated))
            self.real_features.add(self.judges.fid(target))
        self._calibrate(error_map(generated, target).cpu(), sigma.cpu(), error_pred.cpu(), None if epistemic is None else epistemic.cpu())

    def _calibrate(self, error: Tensor, sigma: Tensor, error_pred: Tensor, epistemic: Tensor | None) -> None:
        """Per frame, over all its pixels: Spearman, sparsification (AUSE, AURG) of σ, of ε̂ (and of the epistemic map)
        against the true error, and how well σ sizes it as a Laplace(0, σ) scale: NLL, interval coverage and UCE; and the
        mouth means that `julnet generate`'s confidence (exp(−mean ε̂ / scale), so ranked by mean ε̂) and its risk-coverage use."""
        top, left, side = mouth_box(*error.shape[-2:])
        mouth = (..., slice(top, top + side), slice(left, left + side))
        for i in range(len(error)):
            self.calibration_frames += 1
            self.mouth_errors.append((float(error_pred[i][mouth].double().mean()), float(error[i][mouth].double().mean())))
            maps = {"sigma": sigma[i], "error_pred": error_pred[i]}
            if epistemic is not None:
                maps["epistemic"] = epistemic[i]
                self.mouth_epistemic.append(float(epistemic[i][mouth].double().mean()))
            self.calibration["nll_sigma"].append(nll_laplace(sigma[i], error[i]))
            bins = reliability(sigma[i], error[i], UCE_BINS)  # sorted once, for UCE and the reliability diagram
            self.calibration["uce_sigma"].append(bins.uce)
            points = np.stack([bins.predicted, bins.observed])
            self.reliability = points if self.reliability is None else self.reliability + points
            for p, covered in interval_coverage(sigma[i], error[i], COVERAGE_LEVELS).items():
                self.coverage[p].append(covered)
            for name, predicted in maps.items():
                self.calibration[f"spearman_{name}"].append(spearman(predicted, error[i]))
                result = sparsification(predicted, error[i], self.steps)
                self.calibration[f"ause_{name}"].append(result.ause)
                self.calibration[f"aurg_{name}"].append(random_gain(result))
                self.curves[name] = self.curves.get(name, 0) + result.curve
            self.curves["oracle"] = self.curves.get("oracle", 0) + result.oracle  # depends on the error only
            self.curves["fractions"] = result.fractions

    def results(self) -> tuple[dict[str, float], dict[str, str], dict[str, list[float]], dict[str, dict[str, list[float]]]]:
        """(metrics, unavailable reasons, mean sparsification curves, calibration curves: reliability, risk_coverage)."""
        if self.frames == 0:
            raise ValueError("no frame was evaluated")
        metrics = {k: self.sums[k] / self.frames for k in ("psnr", "psnr_mouth")}
        unavailable: dict[str, str] = {}
        if isinstance(self.judges.lpips, Unavailable):
            unavailable["lpips"] = self.judges.lpips.reason
        else:
            metrics["lpips"] = self.sums["lpips"] / self.frames
        self._fid(metrics, unavailable)
        self._lse(metrics, unavailable)
        for key, values in self.calibration.items():
            finite = [v for v in values if np.isfinite(v)]
            if finite:
                metrics[key] = float(np.mean(finite))
            else:
                unavailable[key] = f"{key.split('_', 1)[1]} or the error is constant on every frame: no ranking to compare"
        for p, values in self.coverage.items():  # frames have one pixel count, so the mean over frames is the pooled coverage
            metrics[f"coverage{round(p * 100)}_gap_sigma"] = abs(float(np.mean(values)) - p)
        predicted, observed = np.array(self.mouth_errors).T  # over all frames: the frames a user would keep or drop
        risk = aurc(-predicted, observed)  # confidence falls as the mouth's mean ε̂ rises, whatever generate.error_scale
        metrics["aurc_confidence"], metrics["eaurc_confidence"] = risk.aurc, risk.aurc - risk.oracle_aurc
        if self.mouth_epistemic:  # frames ranked by the epistemic map's mouth mean, least spread kept first
            spread = aurc(-np.array(self.mouth_epistemic), observed)
            metrics["aurc_epistemic"], metrics["eaurc_epistemic"] = spread.aurc, spread.aurc - spread.oracle_aurc
        curves = {"fractions": self.curves["fractions"].tolist()}
        curves.update({k: (self.curves[k] / self.calibration_frames).tolist() for k in ("oracle", *self.rankers)})
        predicted_bins, observed_bins = (self.reliability / self.calibration_frames).tolist()
        calibration = {
            "reliability": {"predicted": predicted_bins, "observed": observed_bins},
            "risk_coverage": {"coverage": risk.coverage.tolist(), "risk": risk.risk.tolist(), "oracle": risk.oracle_risk.tolist()},
        }
        return metrics, unavailable, curves, calibration

    def _fid(self, metrics: dict[str, float], unavailable: dict[str, str]) -> None:
        if isinstance(self.judges.fid, Unavailable):
            unavailable["fid"] = self.judges.fid.reason
        elif self.frames < 2:
            unavailable["fid"] = f"FID needs at least 2 frames, got {self.frames}"
        else:
            metrics["fid"] = frechet_distance(*self.generated_features.statistics(), *self.real_features.statistics())

    def _lse(self, metrics: dict[str, float], unavailable: dict[str, str]) -> None:
        sync = self.judges.sync
        if isinstance(sync, Unavailable):
            unavailable["lse_d"] = unavailable["lse_c"] = sync.reason
            return
        if self.no_expert_audio is not None:
            unavailable["lse_d"] = unavailable["lse_c"] = self.no_expert_audio
            return
        if sync.why_not_expert is not None:
            unavailable["lse_d"] = unavailable["lse_c"] = f"{sync.why_not_expert}; LSE from the project's own SyncNet is lse_d_own / lse_c_own"
        if not self.lse_rows:
            need = f"{self.window} consecutive frames" if sync.source == "own" else f"{CLIP_FRAMES + 1} frames with their audio"
            unavailable[f"lse_d{sync.suffix}"] = unavailable[f"lse_c{sync.suffix}"] = f"no video has {need}"
            return
        for key in ("lse_d", "lse_c"):  # per-video values averaged over videos, as Wav2Lip's evaluation reports them
            metrics[f"{key}{sync.suffix}"] = float(np.mean([row[key] for row in self.lse_rows]))


def _expert_audio(video: VideoEntry) -> tuple[np.ndarray | None, str | None]:
    """A held-out video's source audio for the expert LSE, or why it cannot be used (which then voids the expert LSE
    for the whole evaluation: an average over the videos that happened to be readable would not compare across runs)."""
    if abs(video.fps - FPS) > 0.01:
        return None, f"expert LSE needs {FPS} fps video (syncnet_python's audio alignment); video {video.id} is at {video.fps} fps"
    try:
        return read_source_audio(video.source, SAMPLE_RATE), None
    except (VideoError, OSError) as exc:
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return None, f"expert LSE needs every held-out video's raw audio; video {video.id}'s source {video.source} is unreadable ({detail})"


def evaluate_with_config(
    model: str, data_uri: str, config: str | None = None, overrides: list[str] | tuple[str, ...] = (), device: str = "cpu"
) -> tuple[Config, EvaluationResult]:
    """What `julnet evaluate` and the Ray job run: settings from `config` (a preset or YAML), else from the model's
    own checkpoint config (so LSE uses the SyncNet it was trained with), plus `key=value` overrides."""
    settings = load_config(config, overrides) if config else None
    read_manifest(data_uri)  # a missing manifest fails before the model is loaded
    if is_baseline(model):
        loaded = load_baseline(model, settings)
        return loaded[0], evaluate(loaded, data_uri, loaded[0], device=device, model_id=model)
    loaded = load_model(model, resolve_device(device))
    settings = settings or override_config(loaded[0], overrides)
    return settings, evaluate(loaded, data_uri, settings, device=device, model_id=model)
