"""One validated configuration schema for every command: presets, YAML files and `--set` overrides."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from julnet.redact import redact_tree

PRESETS_DIR = Path(__file__).parent / "presets"
StageKind = Literal["frame", "clip"]  # a curriculum stage trains single frames, or clips with the sync loss and D_clip


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PretrainedWeights(Section):
    """Where a pretrained network's public weights live (SPEC 2); random init only when allowed."""

    path: str | None = None
    sha256: str | None = None
    allow_random_init: bool = False


class AudioConfig(Section):
    features: Literal["logmel", "deepspeech"] = "logmel"
    n_mels: int = Field(80, ge=8)
    window: int = Field(5, ge=1)

    @property
    def dim(self) -> int:
        """Feature rows per video frame: DeepSpeech's 29 logits or the mel bands."""
        return 29 if self.features == "deepspeech" else self.n_mels

    @model_validator(mode="after")
    def _odd_window(self) -> AudioConfig:
        if self.window % 2 == 0:
            raise ValueError("window must be odd so it can be centred on the target frame")
        return self


class Wav2LipConfig(Section):
    """The Wav2Lip-style generator's widths (generator.kind=wav2lip, julnet.models.wav2lip)."""

    face_channels: list[int] = Field(default=[16, 32, 64, 128, 256, 512], min_length=2)  # per level; each halves the size
    audio_channels: list[int] = Field(default=[32, 64, 128, 256, 512], min_length=1)  # per level; each halves the mel bins
    output_channels: int = Field(32, ge=1)  # the output block's features, which the uncertainty module reads


class GeneratorConfig(Section):
    kind: Literal["julnet", "wav2lip"] = "julnet"  # the generator family (julnet.models.talking_face.GENERATORS)
    # julnet (DINet-style, paper Fig. 3):
    encoder_channels: list[int] = Field(default=[64, 128, 256], min_length=2)
    id_channels: int = Field(128, ge=1)
    audio_channels: int = Field(128, ge=1)
    deform_blocks: int = Field(4, ge=1)
    decoder_channels: int = Field(128, ge=1)
    num_references: int = Field(5, ge=1)  # both families
    wav2lip: Wav2LipConfig = Wav2LipConfig()

    @property
    def levels(self) -> int:
        """Levels of the face encoder of the chosen family (each after the first halves the image)."""
        return len(self.wav2lip.face_channels if self.kind == "wav2lip" else self.encoder_channels)

    @property
    def downsample(self) -> int:
        """Factor by which the face encoder shrinks the image."""
        return 2 ** (self.levels - 1)


class DiscriminatorConfig(Section):
    base_channels: int = Field(32, ge=1)
    max_channels: int = Field(512, ge=1)
    num_blocks: int = Field(4, ge=1)


class SyncNetConfig(Section):
    mouth_size: int = Field(128, ge=16)
    base_channels: int = Field(32, ge=1)
    embed_dim: int = Field(512, ge=8)
    weights: PretrainedWeights = PretrainedWeights()


class UncertaintyConfig(Section):
    """The uncertainty module (paper 3.2) and the weights and gradient paths of L_un (eq. 9)."""

    # The paper gives no width; 32 keeps the module + L_un under 5 % of a training step (64: 6 %; docs/design.md).
    hidden_channels: int = Field(32, ge=1)
    use_features: bool = True  # also feed the generator's last decoder features to the module
    detach_features: bool = False  # those features carry no gradient back into the generator
    # The module's image input is cut from the generator: L_un then reaches the generator only through the error
    # ε (L_un1's ε/σ, eq. 4), not by the generator changing its image to steer σ. Default false, like
    # detach_features (SPEC 3.2: joint learning, features not detached); the ablation experiment revisits it.
    detach_image: bool = False
    # ε enters L_un2 (eq. 8 and its tail term) detached, so the histogram KL trains σ to match the errors and never
    # reshapes the generator's errors toward σ. Default true: the paper makes the error histogram the KL's
    # reference (3.3) and says L_un2 "matches the distribution of uncertainty with the error" (3.4.1); undetached,
    # L_un2 pushed every pixel's error up at initialisation (issue 13). The generator still learns from L_un1.
    detach_error_in_kl: bool = True
    # σ at initialisation: the τ head's bias starts at log(init_sigma), a typical per-pixel error (|Î − I| in [0, 1]
    # is about 0.03-0.05 on real face crops), so L_un1 and L_un2 both have a useful gradient from step 0 instead of
    # σ ≈ 1 lying above every histogram bin (issue 13).
    init_sigma: float = Field(0.05, gt=0)
    log_sigma_min: float = -10.0  # τ = log σ is clamped to [log_sigma_min, log_sigma_max]
    log_sigma_max: float = 10.0
    error_pred_weight: float = Field(1.0, ge=0)  # |ε̂ − sg(ε)|, trains the error head used at inference
    un1_weight: float = Field(1.0, ge=0)  # L_un1 (eq. 4); 0 for the paper's "w/o L_un1" ablation
    un2_weight: float = Field(1.0, ge=0)  # L_un2 (eq. 8 + tail term); 0 for "w/o L_un2"

    @model_validator(mode="after")
    def _range(self) -> UncertaintyConfig:
        if self.log_sigma_min >= self.log_sigma_max:
            raise ValueError("log_sigma_min must be below log_sigma_max")
        if not self.log_sigma_min <= math.log(self.init_sigma) <= self.log_sigma_max:
            raise ValueError(f"init_sigma {self.init_sigma} is outside exp([log_sigma_min, log_sigma_max])")
        return self


class HistogramConfig(Section):
    """The differentiable histograms of eq. 6-7 and the KL of eq. 8 (L_un2); see julnet.losses.uncertainty."""

    bins: int = Field(11, ge=2)  # B, the paper's best of 9..13
    alpha_max: float = Field(3.0, gt=0)  # the last centre is mean(ε) + alpha_max · std(ε)
    spacing: Literal["linear", "log"] = "linear"  # how α runs from 0 to alpha_max
    assignment: Literal["normalized", "softmax"] = "normalized"  # w_j / Σ_k w_k, or eq. 7 literally
    kernel_scale: float = Field(50.0, gt=0)  # k1 of eq. 6 (the softmax assignment only)
    kernel_width: float = Field(1.0, gt=0)  # k2 of eq. 6, in units of the squared mean bin spacing
    detach_stats: bool = True  # the centres' mean and std of ε carry no gradient
    eps: float = Field(1e-6, gt=0)  # smoothing of both histograms before the KL
    # Weight of L_un2's tail term: the squared mismatch between σ and ε in mean log-distance beyond the first and
    # last bin centres, which the edge bins cannot see. It keeps a gradient on σ that lies out of the bins' range
    # (where the KL's is 0) and is 0 when σ = ε; 0 gives eq. 8 alone.
    tail_weight: float = Field(1.0, ge=0)


class LossWeights(Section):
    """The λ of eq. 14."""

    un: float = Field(1.0, ge=0)
    ad: float = Field(1.0, ge=0)
    pe: float = Field(10.0, ge=0)
    sync: float = Field(0.1, ge=0)


class PerceptualConfig(Section):
    """L_pe (eq. 12): L1 between VGG-19 relu1_1 … relu5_1 features of the image and of `scales` halvings."""

    scales: int = Field(2, ge=1)
    # How the layers × scales terms combine. mean (DINet's code divides the sum by their count) is what λ3 = 10,
    # which JULNet reuses from DINet, was tuned for; sum (eq. 12 read literally) is that × 5·scales.
    reduction: Literal["mean", "sum"] = "mean"
    vgg: PretrainedWeights = PretrainedWeights()
    # Fraction of VGG-19's channels in every layer. The public ImageNet weights are full width, so a narrower VGG runs
    # on random weights only: smoke runs (tiny), where random features mean as little at any width and cost width².
    vgg_width: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _narrow_vgg_is_random(self) -> PerceptualConfig:
        if self.vgg_width < 1 and (self.vgg.path or not self.vgg.allow_random_init):
            raise ConfigError(
                f"perceptual.vgg_width={self.vgg_width}: pretrained VGG-19 weights are full width; a narrower VGG needs "
                "perceptual.vgg.allow_random_init=true and no perceptual.vgg.path (smoke runs only)"
            )
        return self


class OptimConfig(Section):
    lr: float = Field(1e-4, gt=0)
    d_lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(None, gt=0)


class PreprocessConfig(Section):
    """How raw videos become shards; recorded in the dataset manifest."""

    fps: int = Field(25, gt=0)
    sample_rate: int = Field(16000, ge=8000)
    crop_height: int = Field(416, ge=16)
    crop_width: int = Field(320, ge=16)
    jpeg_quality: int = Field(95, ge=50, le=100)
    landmarks: Literal["dlib", "openface"] = "dlib"
    max_missing_face_fraction: float = Field(0.2, ge=0, le=1)
    min_frames: int = Field(10, ge=1)
    min_side: int = Field(64, ge=16)
    max_side: int = Field(4096, ge=64)
    shard_target_mb: float = Field(128.0, gt=0)
    chunk_frames: int = Field(250, ge=8)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    # One face tracked (julnet.data.track): the largest over the first frames of a shot, then followed by overlap
    # of landmark boxes and by how far the landmarks moved (in face widths) since the subject was last seen.
    track_init_frames: int = Field(5, ge=1)
    track_min_iou: float = Field(0.3, gt=0, le=1)
    track_max_jump: float = Field(0.5, gt=0)
    # Where no face continues the track the subject is lost, and taken back by the face whose dlib face descriptor lies
    # within this distance of the subject's (dlib's own same-person threshold).
    track_identity_distance: float = Field(0.6, gt=0)
    # Between detections the faces are followed by the landmark predictor alone (julnet.data.track.detect_frames):
    # the face detector runs at least every this many frames, on every cut and where a followed face was lost; 1 = every frame.
    track_redetect_every: int = Field(5, ge=1)
    # A followed face must still look as it did a frame before (correlation of 16x16 grey patches of its landmark box;
    # >= 0.93 on the 8 GRID clips, <= 0.4 where the predictor was left behind by a fast move), else the detector runs.
    track_min_similarity: float = Field(0.8, ge=-1, le=1)
    # Scene cuts (julnet.data.scenes): both the HSV-histogram distance and the grey-thumbnail difference must jump.
    scene_cut_histogram: float = Field(0.15, ge=0, le=1)
    scene_cut_pixels: float = Field(4.0, ge=0)
    # Audio-video sync (julnet.data.sync): the expert SyncNet (evaluation.expert_syncnet) when configured, else the
    # project's own (syncnet.weights); with neither the step is skipped and the manifest says so.
    av_sync: bool = True
    max_av_offset: int = Field(5, ge=0)  # frames the audio may be shifted either way
    min_sync_confidence: float = Field(3.0, ge=0)  # LSE-C below this: out_of_sync (expert SyncNet's scale)
    min_sync_confidence_own: float = Field(0.02, ge=0)  # the same for the project's own SyncNet (its own scale)


class TrackingConfig(Section):
    """MLflow: where runs go (None: $MLFLOW_TRACKING_URI, else a local sqlite file) and what is logged."""

    uri: str | None = None
    experiment: str = "julnet"
    image_every: int = Field(200, ge=1)


class StageConfig(Section):
    """One curriculum stage: frame stages coarse to fine, then the clip stage."""

    name: str
    kind: StageKind = "frame"
    height: int = Field(ge=16)
    width: int = Field(ge=16)
    batch_size: int = Field(ge=1)
    steps: int = Field(ge=1)


class TrainConfig(Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Mixed precision of the training step (julnet.training.step.select_precision). auto: bf16 autocast on CUDA
    # GPUs that support it (no GradScaler), fp16 autocast + GradScaler on older ones, fp32 on the CPU. bf16 and
    # fp16 need CUDA. The old `amp: true|false` is read as auto|fp32.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    # CUDA only (the CPU step is unchanged by these): networks and inputs in channels_last memory format, fused Adam.
    channels_last: bool = True
    fused_adam: bool = True
    # torch.compile the networks (nn.Module.compile, in place); if the first compiled step fails, one log line says
    # why and training goes on eagerly.
    compile: bool = False
    # Chunks (row groups: runs of one video's frames) whose examples the loader interleaves at random, so a batch
    # mixes videos (julnet.data.loader). 1 streams one chunk after another: batches of a single video.
    mix_chunks: int = Field(8, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    keep_last: int = Field(3, ge=1)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=-1)
    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy_amp(cls, data: Any) -> Any:
        """`amp` (before `precision`): true meant fp16 + GradScaler on CUDA and fp32 elsewhere, now `auto`."""
        if isinstance(data, dict) and "amp" in data:
            data = dict(data)
            amp = data.pop("amp")
            if not isinstance(amp, bool):
                raise ValueError(f"amp must be true or false (it is now precision: auto | bf16 | fp16 | fp32), got {amp!r}")
            data.setdefault("precision", "auto" if amp else "fp32")
        return data

    def stage(self, name: str | None) -> StageConfig:
        """The stage called `name`, or the first one."""
        if name is None:
            return self.stages[0]
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"train.stages: no stage named {name!r} (have {[s.name for s in self.stages]})")


class PromotionConfig(Section):
    """When a challenger replaces the champion (julnet promote): the primary metric must improve by more than
    `margin`, and no guard metric may get worse by more than its tolerance (both in the metric's own units)."""

    model_name: str = "julnet"
    primary: str = "psnr_mouth"
    margin: float = Field(0.0, ge=0)
    guards: dict[str, float] = {"psnr": 0.5, "lpips": 0.005, "fid": 1.0, "lse_d": 0.2, "lse_c": 0.2, "lse_d_own": 0.2, "lse_c_own": 0.2,
                                "spearman_sigma": 0.05, "ause_sigma": 0.01}
    lock_timeout_s: float = Field(120.0, gt=0)
    stale_lock_s: float = Field(900.0, gt=0)

    @model_validator(mode="after")
    def _tolerances(self) -> PromotionConfig:
        negative = {k: v for k, v in self.guards.items() if v < 0}
        if negative:
            raise ValueError(f"guard tolerances must be >= 0, got {negative}")
        return self


class EvaluationConfig(Section):
    """How `julnet evaluate` measures a model on held-out data: the same settings for every candidate.

    The networks behind LPIPS, FID and the expert LSE load from configured weights only (SPEC 2); without
    the expert SyncNet, LSE may use the project's own SyncNet (`syncnet.weights`) and is then labelled `_own`.
    """

    split: Literal["train", "val", "test"] = "test"
    split_by: Literal["video", "identity"] = "video"
    max_frames_per_video: int | None = Field(None, ge=1)
    max_frames: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    references: Literal["random", "even", "first"] = "random"
    seed: int = 0
    lpips_vgg16: PretrainedWeights = PretrainedWeights()
    fid_inception: PretrainedWeights = PretrainedWeights()
    expert_syncnet: PretrainedWeights = PretrainedWeights()
    own_syncnet_lse: bool = True
    lse_max_offset: int = Field(15, ge=0)
    sparsification_steps: int = Field(20, ge=2)
    # K reference sets per frame for the epistemic map (julnet.evaluation.epistemic): K − 1 extra generator passes; 0: off
    epistemic_samples: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _never_random(self) -> EvaluationConfig:
        for key in ("lpips_vgg16", "fid_inception", "expert_syncnet"):
            if getattr(self, key).allow_random_init:
                raise ConfigError(f"evaluation.{key}.allow_random_init: evaluation never runs a metric network on random weights")
        check_epistemic_samples("evaluation", self.epistemic_samples)
        return self


def check_epistemic_samples(section: str, samples: int) -> None:
    """K reference sets give a spread only from 2 on; 0 switches the epistemic estimate off."""
    if samples == 1:
        raise ConfigError(f"{section}.epistemic_samples: 1 reference set has no spread; use 0 (off) or at least 2")


def check_epistemic_video(settings: GenerateConfig) -> None:
    """The epistemic heat-map video shows a map that only generate.epistemic_samples >= 2 computes."""
    if not settings.epistemic_samples:
        raise ConfigError("an epistemic video needs generate.epistemic_samples >= 2 (--epistemic-samples K)")


class GenerateConfig(Section):
    """Inference (`julnet generate`, batch jobs): frames per forward pass, blending, and the report's confidence scale."""

    batch_frames: int = Field(16, ge=1)
    reference_strategy: Literal["even", "first"] = "even"
    feather: float = Field(0.1, ge=0, le=0.5)
    error_scale: float = Field(0.1, gt=0)
    confidence_threshold: float = Field(0.5, ge=0, le=1)
    silence_rms: float = Field(1e-3, ge=0)
    # Shorter speech is rejected (short_audio): 0.2 s (5 frames) is below the shortest spoken word (~0.3 s for a
    # short one) but above the 30-100 ms clicks and cut-off uploads that would give a 1-2 frame video; 0 disables.
    min_audio_seconds: float = Field(0.2, ge=0)
    heat_sigma_max: float = Field(0.5, gt=0)
    crf: int = Field(18, ge=0, le=51)
    # Epistemic map: the generator re-run on K reference sets (the output's, then K − 1 drawn with epistemic_seed
    # from the video's frames with a face); its per-pixel std, 0 .. heat_epistemic_max, is the second heat map. 0: off.
    epistemic_samples: int = Field(0, ge=0)
    epistemic_seed: int = 0
    heat_epistemic_max: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _epistemic(self) -> GenerateConfig:
        check_epistemic_samples("generate", self.epistemic_samples)
        return self


SWEEP_METRICS: dict[str, Literal["min", "max"]] = {"eval_mouth_l1": "min", "eval_l1": "min", "eval_mouth_psnr": "max"}
"""Metrics a sweep can rank trials by (on a fixed held-out batch, independent of the λ being swept) and their direction."""


class SweepConfig(Section):
    """A Ray Tune sweep (`ray_jobs/tune.py`) around this config: search space, ASHA + Optuna, trial resources.

    A dimension that is switched off (empty list, null range) keeps the base config's value in every trial.
    """

    loss_weights: list[Literal["un", "ad", "pe", "sync"]] = ["un", "ad", "pe", "sync"]
    loss_factor: float = Field(3.0, gt=1)  # each swept λ is log-uniform in [λ / factor, λ * factor]
    bins: tuple[int, int] | None = (9, 13)  # inclusive integer range of hist.bins (the paper's ablation)
    alpha_max: tuple[float, float] | None = (2.0, 4.0)
    spacing: list[Literal["linear", "log"]] = ["linear", "log"]
    assignment: list[Literal["normalized", "softmax"]] = []
    include_base: bool = True  # the first trial runs the base config's values (the paper's, in `paper`)
    num_samples: int = Field(16, ge=1)
    metric: str = "eval_mouth_l1"
    mode: Literal["min", "max"] = "min"
    eval_split: Literal["train", "val", "test"] = "val"  # where the fixed evaluation batch comes from
    eval_examples: int = Field(32, ge=1)
    seed: int = 0
    max_concurrent_trials: int = Field(2, ge=1)
    grace_period: int = Field(1000, ge=1)  # ASHA: steps every trial runs before it can be stopped
    reduction_factor: float = Field(3.0, gt=1)
    brackets: int = Field(1, ge=1)
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    driver_cpus: float = Field(0.1, gt=0)  # the trial's own process, which only drives its TorchTrainer
    trial_max_failures: int = Field(0, ge=0)
    stages: list[str] = []  # names in train.stages each trial runs, in curriculum order; empty: all
    steps: int | None = Field(None, ge=1)  # steps of each of those stages in a trial; null: the stage's own
    # "optuna" samples the dimensions above and ASHA stops weak trials. "grid" runs every named variant (dotted
    # config keys to values, e.g. {no_un2: {un.un2_weight: 0}}) with every seed in `seeds` (train.seed; empty: the
    # config's own), each to the end: an ablation, every arm compared at the same step count.
    search: Literal["optuna", "grid"] = "optuna"
    variants: dict[str, dict[str, Any]] = {}
    seeds: list[int] = []
    # Evaluation-suite metrics (julnet evaluate's keys, e.g. psnr_mouth, lpips, spearman_sigma) to score each finished
    # trial's final model with, on evaluation.split with the evaluation.* settings; empty: trials keep only `metric`.
    # Scores land on the trial's run (eval_<key>), in the results table, and per variant as mean ± std over seeds.
    score: list[str] = []

    @model_validator(mode="after")
    def _ranges(self) -> SweepConfig:
        if self.metric not in SWEEP_METRICS:
            raise ConfigError(f"sweep.metric: {self.metric!r} is not one of {sorted(SWEEP_METRICS)}")
        if SWEEP_METRICS[self.metric] != self.mode:
            better = "lower" if SWEEP_METRICS[self.metric] == "min" else "higher"
            raise ConfigError(f"sweep.mode: {self.mode!r} does not fit sweep.metric {self.metric!r}, where {better} is better")
        if self.bins is not None and not 2 <= self.bins[0] <= self.bins[1]:
            raise ConfigError(f"sweep.bins: {list(self.bins)} must be [low, high] with 2 <= low <= high")
        if self.alpha_max is not None and not 0 < self.alpha_max[0] < self.alpha_max[1]:
            raise ConfigError(f"sweep.alpha_max: {list(self.alpha_max)} must be [low, high] with 0 < low < high")
        if self.search == "grid" and not self.variants:
            raise ConfigError("sweep.variants: a grid sweep needs at least one named variant")
        if self.search == "optuna" and not (self.loss_weights or self.bins or self.alpha_max or self.spacing or self.assignment):
            raise ConfigError("sweep: every search dimension is off (loss_weights, bins, alpha_max, spacing, assignment)")
        for key in ("loss_weights", "spacing", "assignment", "stages", "seeds", "score"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ConfigError(f"sweep.{key}: lists a value twice: {values}")
        return self


class Config(Section):
    name: str = "custom"
    audio: AudioConfig = AudioConfig()
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    syncnet: SyncNetConfig = SyncNetConfig()
    un: UncertaintyConfig = UncertaintyConfig()
    hist: HistogramConfig = HistogramConfig()
    loss: LossWeights = LossWeights()
    perceptual: PerceptualConfig = PerceptualConfig()
    optim: OptimConfig = OptimConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionConfig = PromotionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    generate: GenerateConfig = GenerateConfig()
    train: TrainConfig
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _resolutions(self) -> Config:
        factor = self.generator.downsample
        for i, stage in enumerate(self.train.stages):
            for key in ("height", "width"):
                value = getattr(stage, key)
                if value % factor:
                    raise ConfigError(
                        f"train.stages.{i}.{key}: {value} is not a multiple of {factor}, "
                        f"which the {self.generator.kind} generator's {self.generator.levels}-level encoder needs"
                    )
        names = [s.name for s in self.train.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"train.stages: stage names must be unique, got {names}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every value as this process uses it, credentials included: never write this out (see `public_dict`)."""
        return self.model_dump(mode="json")

    def public_dict(self) -> dict[str, Any]:
        """`to_dict` as it may be written or shown: credentials in URIs and secret-named values redacted."""
        return redact_tree(self.to_dict())

    def with_values(self, values: dict[str, Any]) -> Config:
        """A validated copy with dotted keys (as `--set` names them) set to the given values."""
        data = self.to_dict()
        for key, value in values.items():
            _set_key(data, key, value)
        return _validated(data, ())

    def to_yaml(self) -> str:
        """The config file as written beside runs and checkpoints (redacted, like `public_dict`)."""
        return yaml.safe_dump(self.public_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted keys to scalar values as shown outside the process (redacted), e.g. for MLflow params."""
        return flatten_keys(self.public_dict())


DEFAULT_CONFIG = "tiny"  # the preset every command, Ray job and pipeline uses without --config (or its config parameter)

# Keys that may change between a checkpoint and its resumption: how long and how we log, and the sections that
# only matter after training (evaluation, promotion, inference, sweeps), not what we train.
RESUMABLE_KEYS = ("train.log_every", "train.checkpoint_every", "train.keep_last", "train.device",
                  "train.precision", "train.channels_last", "train.fused_adam", "train.compile",
                  "tracking.", "evaluation.", "promotion.", "generate.", "sweep.")


def resumable_key(key: str) -> bool:
    """Whether a dotted config key may differ between a run and its resumption (step counts included)."""
    return key.startswith(RESUMABLE_KEYS) or key.endswith(".steps")


def flatten_keys(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings (and lists of them) as dotted keys to scalar values."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in items:
        out.update(flatten_keys(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _read_yaml(source: str) -> dict[str, Any]:
    """A preset name or a YAML path, with `extends:` resolved (a deep merge onto the named base)."""
    path = Path(source)
    if not path.suffix and (PRESETS_DIR / f"{source}.yaml").is_file():
        path = PRESETS_DIR / f"{source}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"config {source!r} is neither a preset ({', '.join(presets)}) nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping")
    base = data.pop("extends", None)
    if base is None:
        return data
    base_path = (path.parent / base) if Path(base).suffix else Path(base)
    return _merge(_read_yaml(str(base_path)), data)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    """Set `a.b.0.c=value` in place; the key path must already exist (or be a known field)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key.sub=value")
    value = yaml.safe_load(raw) if raw else ""
    if key == "train.amp" and isinstance(value, bool):  # the old name of train.precision (see TrainConfig)
        key, value = "train.precision", "auto" if value else "fp32"
    _set_key(data, key, value)


def _set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted `key` (list items by index) to `value` in place; the path must name a field of the schema."""
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"unknown config key {where!r}: no list item {part}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not _known_key(parts[: depth + 1]):
            raise ConfigError(f"unknown config key {where!r}")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, copy.deepcopy(_mapping_default(parts[: depth + 1])))


def _mapping_default(parts: list[str]) -> dict[str, Any]:
    """The schema's default for a mapping field (so `--set promotion.guards.psnr=1` keeps the other guards), else {}."""
    model: Any = Config
    for part in parts[:-1]:
        model = model.model_fields[part].annotation if part in getattr(model, "model_fields", {}) else None
    field = getattr(model, "model_fields", {}).get(parts[-1])
    default = getattr(field, "default", None)
    return default if isinstance(default, dict) else {}


def _known_key(parts: list[str]) -> bool:
    """Whether a dotted path names a field of the schema (list indices skipped)."""
    model: Any = Config
    for part in parts:
        if part.isdigit():
            continue
        if getattr(model, "__origin__", None) is dict:  # a mapping's keys are the user's (e.g. promotion.guards)
            return True
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        inner = getattr(annotation, "__args__", None)
        model = inner[0] if getattr(annotation, "__origin__", None) is list and inner else annotation
    return True


def load_config(source: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the validated config from a preset name or YAML path plus `key.sub=value` overrides."""
    return _validated(_read_yaml(source), overrides)


def override_config(cfg: Config, overrides: list[str] | tuple[str, ...], sections: tuple[str, ...] | None = None) -> Config:
    """A copy of `cfg` (e.g. a checkpoint's own config) with `key.sub=value` overrides applied and validated;
    with `sections`, only keys under those may change."""
    for assignment in overrides:
        if sections is not None and assignment.partition("=")[0].split(".")[0] not in sections:
            allowed = ", ".join(f"{s}.*" for s in sections)
            raise ConfigError(f"--set {assignment!r}: only {allowed} keys can be set here (the model's own config fixes the rest)")
    return _validated(cfg.to_dict(), overrides)


def _validated(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> Config:
    for assignment in overrides:
        _apply_override(data, assignment)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "config"
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, ConfigError):
        return str(ctx_error)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown config key {key!r}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {message} (got {err.get('input')!r}){more}"
