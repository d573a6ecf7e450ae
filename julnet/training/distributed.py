"""Data-parallel JULNet training on Ray Train V2: the worker loop and the curriculum's trainer.

Thin around the library: every worker builds the same networks and calls the same TrainStep as the local
loop. Ray provides the worker group (DDP over gloo on CPU, nccl on GPU), dataset shards, checkpoint
persistence and restarts. One worker group trains all the stages a job has left, each stage from the previous
one's weights, without restarting between them. Checkpoints are this project's format (state.pt + config.yaml) in
directories named step-NNNNNNNN under <storage>/<run name>/<stage>/, so resubmitting the same name resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from julnet import storage
from julnet.config import Config, StageConfig
from julnet.data.loader import TORCH_DTYPES, examples_dataset, examples_per_epoch
from julnet.data.manifest import read_manifest
from julnet.pretrained import check_configured
from julnet.progress import Progress, keep_progress_bar_settings
from julnet.models.build import Models, build_models, build_optimizers
from julnet.models.checkpoint import (
    STATE_FILE,
    check_warm_start,
    checkpoint_dir,
    fetch_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_training_state,
    training_state,
    write_checkpoint_files,
)
from julnet.training.heldout import heldout_batch, heldout_metrics
from julnet.training.step import NonFiniteLossError, StepMetrics, TrainStep
from julnet.version import code_version

if TYPE_CHECKING:
    from julnet.tracking import RunTracker

log = logging.getLogger(__name__)
# MLflow (julnet.tracking) and matplotlib (julnet.visualize) are imported where rank 0 or the driver uses them, not
# here: every process that unpickles this module's functions (each Ray Train worker, Ray Data's DatasetManager and
# SplitCoordinator) would otherwise import them, 1.5-2.5 s of CPU each, for nothing.

# Fault-tolerance drills: "RANK:STEP" makes that rank's process exit at that step (once per stage);
# "RANK:STEP:nan" poisons that rank's batch at that step with NaN.
FAULT_ENV = "JULNET_FAULT_AT_STEP"
NONFINITE_FILE = "NONFINITE.json"
DONE_FILE = "DONE.json"
# The metric Ray ranks checkpoints by when it prunes them: the global step, plus FINAL_BONUS for a stage's last.
KEEP_SCORE = "checkpoint_keep_score"
FINAL_BONUS = 10**12
CURVE_KEYS = ["total", "un", "pe", "ad", "mouth_l1"]


@dataclass
class CurriculumRun:
    """Everything the workers need to train a run's remaining stages in one worker group (plain data, sent to them)."""

    config: dict[str, Any]
    stages: list[str]  # the stages this job trains, in curriculum order
    manifest: str
    storage_uri: str  # a stage's checkpoints are under <storage>/<run name>/<stage>/
    run_name: str
    tracking_uri: str
    step_offsets: dict[str, int]  # global step before each stage (the x-axis of MLflow metrics)
    inits: dict[str, str | None]  # a stage's warm start (a checkpoint URI, or None: from scratch); absent: the previous stage's weights
    eval_split: str | None = None  # rank 0 evaluates a fixed batch of this split at every report (sweeps rank by it)
    eval_examples: int = 0

    @property
    def cfg(self) -> Config:
        return Config.model_validate(self.config)

    def stage_uri(self, stage: str) -> str:
        return storage.join(self.storage_uri, self.run_name, stage)


@dataclass
class Rank:
    """This worker's place in the group, and what rank 0 alone keeps (its MLflow run, the metrics not yet logged)."""

    rank: int
    world: int
    device: torch.device
    tracker: RunTracker | None
    logged: int  # the newest global step MLflow already has (a restarted group does not log a step twice)
    pending: list[tuple[int, dict[str, float]]] = field(default_factory=list)


# ---- the worker ----------------------------------------------------------------------------------------


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: the job's stages in order, each restored or warm-started, then stepped, reported
    and checkpointed; a stage hands its weights to the next in memory, so the group never restarts between stages."""
    run = CurriculumRun(**loop_config)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    tracker = _tracker(run) if rank == 0 else None
    me = Rank(rank, context.get_world_size(), ray.train.torch.get_device(), tracker,
              max(tracker.logged_steps("total"), default=0) if tracker else 0)
    first, checkpoint = _resume_point(run)
    handover: list[dict[str, Any]] = []  # a finished stage's final state, until the next stage has loaded it
    for name in run.stages[first:]:
        if not train_stage(run, name, me, checkpoint if name == run.stages[first] else None, handover):
            return  # stopped on a non-finite loss


def _resume_point(run: CurriculumRun) -> tuple[int, ray.train.Checkpoint | None]:
    """The stage to start with and its checkpoint: the last of this job's stages with a checkpoint, else the first.

    Within that stage, Ray's checkpoint when it has one there. Ray's controller learns of a reported checkpoint by
    polling; a worker that dies before that poll makes Ray restart the group with an older checkpoint (or none,
    or the previous stage's final one) although a newer one is stored. So a stage Ray has no checkpoint of resumes
    from its newest stored one (the one the data plan, `latest_step`, already starts from)."""
    checkpoint = ray.train.get_checkpoint()
    ours = checkpoint.path.rstrip("/").rsplit("/", 2)[-2] if checkpoint is not None else None
    for index in reversed(range(len(run.stages))):
        if run.stages[index] == ours:
            return index, checkpoint
        stored = _stored_checkpoint(run.stage_uri(run.stages[index]))
        if stored is not None:
            return index, stored
    return 0, None


def train_stage(run: CurriculumRun, name: str, me: Rank, checkpoint: ray.train.Checkpoint | None,
                handover: list[dict[str, Any]]) -> bool:
    """One stage on this worker, from its checkpoint, else the state in `handover` (taken out, so a GPU does not keep
    the previous stage's networks and optimizers), else its warm start; leaves its final state in `handover` for the
    next stage, if one follows.
    False after a non-finite stop."""
    cfg, stage = run.cfg, run.cfg.train.stage(name)
    models = build_models(cfg, me.device)
    optimizers = build_optimizers(cfg, models)
    # Before the DDP wrap: TrainStep puts the networks in their memory format (and compiles them) in place.
    step_fn = TrainStep(cfg, models, optimizers, me.device, **(_agreement() if me.world > 1 else {}))
    if me.world > 1:
        _wrap_ddp(models, me.device)
    start = _restore(run, name, checkpoint, handover.pop() if handover else None, models, optimizers, step_fn)
    stage_uri, offset = run.stage_uri(name), run.step_offsets[name]
    heldout = _heldout(run, stage) if me.rank == 0 and run.eval_split else None
    window: list[StepMetrics] = []  # read once per log_every steps: no host-device sync inside a step
    done: list[dict[str, float]] = []  # read, not yet logged (a checkpoint step reads before a log step)
    if start and me.tracker:
        me.pending.append((offset + start + 1, {"resumed_from_step": float(start)}))
    batches = ray.train.get_dataset_shard(name).iter_torch_batches(
        batch_size=stage.batch_size, dtypes=TORCH_DTYPES, drop_last=True, pin_memory=me.device.type == "cuda"
    )
    models.train()
    t_last, step_last, step = time.perf_counter(), start, start
    lines = Progress(f"[{name}]", stage.steps, "steps", done=start, rate_unit="it", per="s", logger=log) if me.rank == 0 else None
    for step, batch in zip(range(start + 1, stage.steps + 1), batches):
        if _drill(stage_uri, me.rank, step) == "nan":
            batch = {**batch, "target": torch.full(batch["target"].shape, float("nan"))}
        read = step % cfg.train.log_every == 0 or step == stage.steps or step % cfg.train.checkpoint_every == 0
        ran = False
        try:
            window.append(step_fn.run(batch, stage.kind))
            ran = True
            rows = step_fn.read(window) if read else []
        except NonFiniteLossError as exc:  # raised at the bad step (CPU) or when its window is read (CUDA)
            bad_step = step - len(window) + 1 + exc.index if ran else step
            if me.rank == 0:
                storage.write_text(storage.join(stage_uri, NONFINITE_FILE), json.dumps({"step": bad_step, "error": str(exc)}))
            return False
        if read:
            window.clear()
            done.extend(rows)
        if step % cfg.train.log_every == 0 or step == stage.steps:
            metrics = _mean(done)
            done.clear()
            now = time.perf_counter()
            metrics["samples_per_s"] = me.world * stage.batch_size * (step - step_last) / (now - t_last)
            metrics.update(_memory(me.device))
            metrics.update({f"lambda_{key}": weight for key, weight in cfg.loss})
            t_last, step_last = now, step
            if offset + step > me.logged:
                me.pending.append((offset + step, metrics))
            if lines is not None:
                lines.update(step, force=True, note=f"total={metrics['total']:.4g} mouth_l1={metrics['mouth_l1']:.4g} "
                                                    f"{metrics['samples_per_s']:.1f} samples/s")
        if me.tracker and step % cfg.tracking.image_every == 0:
            from julnet.visualize import sample_grid

            grid = sample_grid(**step_fn.preview(batch, stage.kind))
            me.tracker.log_image(grid, f"samples/{name}/step-{step:08d}.png")
        if step % cfg.train.checkpoint_every == 0 or step == stage.steps:
            evaluation = heldout_metrics(models, heldout, stage.kind, me.device, stage.batch_size) if heldout else {}
            if evaluation and offset + step > me.logged:
                me.pending.append((offset + step, evaluation))
            state = training_state(cfg, models, optimizers, step_fn.scaler, step, name) if me.rank == 0 else None
            _report(run, name, step, state, evaluation, final=step == stage.steps)
            if me.tracker:
                me.tracker.log_metrics(me.pending)  # metrics are committed with their checkpoint: never twice
                me.pending.clear()
    if step < stage.steps:
        raise RuntimeError(f"the data ran out at step {step} of {stage.steps}; the dataset plan is too short")
    if name != run.stages[-1]:  # the next stage starts from it
        handover.append(training_state(cfg, models, optimizers, step_fn.scaler, step, name))
    return True


def _wrap_ddp(models: Models, device: torch.device) -> None:
    """DDP around each trained network. Gradients are views into DDP's all-reduce buckets (no copy, no second
    gradient-sized buffer); the buckets take the parameters' strides, so channels_last networks keep their layout."""
    ids = [device.index] if device.type == "cuda" else None
    for name in Models.TRAINED:
        module = nn.parallel.DistributedDataParallel(getattr(models, name), device_ids=ids, gradient_as_bucket_view=True)
        setattr(models, name, module)


def _agreement() -> dict[str, Any]:
    """How the ranks agree that a loss is finite: on the host (CPU) or with a flag all-reduced on the device."""
    return {"all_finite": _all_ranks_finite, "any_rank": _any_rank_flag}


def _all_ranks_finite(ok: bool) -> bool:
    flag = torch.tensor([1.0 if ok else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _any_rank_flag(flag: torch.Tensor) -> torch.Tensor:
    """1 on every rank if it is 1 on any (the deferred finite check's flag; stays on the device)."""
    flag = flag.clone()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def _restore(run: CurriculumRun, name: str, checkpoint: ray.train.Checkpoint | None, carried: dict[str, Any] | None,
             models: Models, optimizers, step_fn: TrainStep) -> int:
    """Continue from the stage's checkpoint, else start from the previous stage's weights or the stage's warm start
    (`init`); returns the step done."""
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory))
        restore_training_state(state, models, optimizers, step_fn.scaler)
        log.info("resumed %s at step %d; continuing with step %d", name, state["step"], state["step"] + 1)
        return state["step"]
    if carried is not None:
        load_model_weights(carried, models)
        log.info("%s starts from the weights %s ended with", name, carried["stage"])
    elif init := run.inits.get(name):
        with tempfile.TemporaryDirectory() as tmp:
            load_model_weights(load_checkpoint(fetch_checkpoint(init, Path(tmp), run.tracking_uri)), models)
        log.info("initialised %s from %s", name, init)
    return 0


def _stored_checkpoint(stage_uri: str) -> ray.train.Checkpoint | None:
    """The newest complete checkpoint under a stage's folder, as a Ray checkpoint (None when there is none)."""
    step = latest_step(stage_uri)
    if not step:
        return None
    fs, path = storage.filesystem(storage.join(stage_uri, checkpoint_dir(Path("."), step).name))
    return ray.train.Checkpoint(path=path, filesystem=fs)


def _tracker(run: CurriculumRun) -> RunTracker:
    from julnet.tracking import RunTracker

    tracker = RunTracker(run.tracking_uri, run.cfg.tracking.experiment, run.run_name)
    tracker.start(params=run.cfg.flat())
    return tracker


def _heldout(run: CurriculumRun, stage: StageConfig) -> dict[str, torch.Tensor]:
    """The fixed evaluation batch (seed train.seed + 1, so a train split is not drawn in the first epoch's order)."""
    cfg = run.cfg
    return heldout_batch(run.manifest, stage, cfg.generator.num_references, run.eval_split, run.eval_examples, cfg.train.seed + 1)


def _drill(stage_uri: str, rank: int, step: int) -> str | None:
    """Run the fault drill configured in JULNET_FAULT_AT_STEP, if it is for this rank and step."""
    parts = os.environ.get(FAULT_ENV, "").split(":")
    if parts[:2] != [str(rank), str(step)]:
        return None
    if parts[2:] == ["nan"]:
        log.warning("fault drill: rank %d gets a NaN batch at step %d", rank, step)
        return "nan"
    marker = storage.join(stage_uri, f"FAULT-{rank}-{step}")
    if not storage.exists(marker):
        storage.write_text(marker, "injected")
        log.warning("fault drill: rank %d exits at step %d", rank, step)
        os._exit(1)
    return None


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[-1]}


def _memory(device: torch.device) -> dict[str, float]:
    out = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _report(run: CurriculumRun, name: str, step: int, state: dict[str, Any] | None, evaluation: dict[str, float], final: bool) -> None:
    """Every rank reports; rank 0 (the one with a `state`) attaches the checkpoint, which Ray uploads in the
    background, and its evaluation.

    `global_step` counts across the curriculum, so a scheduler comparing trials sees one clock over all stages.
    KEEP_SCORE ranks a stage's final checkpoint above every other, so Ray's pruning keeps it (see fit_curriculum).
    """
    global_step = run.step_offsets[name] + step
    metrics = {"step": step, "global_step": global_step, KEEP_SCORE: global_step + (FINAL_BONUS if final else 0), **evaluation}
    dir_name = f"{name}/{checkpoint_dir(Path('.'), step).name}"
    if state is None:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=dir_name)
        return
    directory = Path(tempfile.mkdtemp(prefix="julnet-checkpoint-"))
    write_checkpoint_files(directory, state)
    ray.train.report(
        metrics,
        checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
        checkpoint_dir_name=dir_name,
        checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
    )


# ---- the driver ----------------------------------------------------------------------------------------


def latest_step(stage_uri: str) -> int:
    """The newest step with a complete checkpoint under a stage's folder (0 when none)."""
    steps = [
        int(uri.rsplit("/", 2)[-2].removeprefix("step-"))
        for uri in storage.list_files(stage_uri, suffixes=STATE_FILE)
        if uri.rsplit("/", 2)[-2].startswith("step-")
    ]
    return max(steps, default=0)


def _dataset_factory(run: CurriculumRun, name: str):
    """Built at every worker-group start, so after a restart the data goes on with fresh epochs."""

    def make():
        cfg = run.cfg
        stage = cfg.train.stage(name)
        start = latest_step(run.stage_uri(name))
        per_epoch = examples_per_epoch(run.manifest, stage, cfg.audio.window)
        needed = (stage.steps - start) * stage.batch_size * cfg.train.num_workers
        epochs = max(1, math.ceil(needed / max(per_epoch, 1))) + 1
        return examples_dataset(run.manifest, stage, cfg.generator.num_references, "train", cfg.train.seed, range(start, start + epochs),
                                cfg.train.mix_chunks)

    return make


def fit_curriculum(run: CurriculumRun, callbacks: list | None = None) -> dict[str, str]:
    """Train the job's stages with one TorchTrainer (one worker group, a dataset per stage); returns each stage's
    final checkpoint URI.

    `callbacks` go to the trainer's RunConfig (a Tune trial passes TuneReportCallback to forward the reports).
    Ray keeps the newest `train.keep_last` checkpoints of the last stage and the final one of each earlier stage
    (while an earlier stage trains, up to one more per stage after it): KEEP_SCORE puts finals first.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = run.cfg.train
    markers = {name: storage.join(run.stage_uri(name), NONFINITE_FILE) for name in run.stages}
    for name, marker in markers.items():
        if storage.exists(marker):  # a resubmission after a non-finite stop: go on from the last good checkpoint
            log.info("stage %s stopped on a non-finite loss before (%s); resuming from its last good checkpoint",
                     name, json.loads(storage.read_text(marker))["error"])
            storage.delete(marker)
    resources = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})}
    fs, root = storage.filesystem(run.storage_uri)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=asdict(run),
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run.run_name,
            storage_path=root,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_last + len(run.stages) - 1,
                                               checkpoint_score_attribute=KEEP_SCORE, checkpoint_score_order="max"),
            callbacks=callbacks,
        ),
        # A dataset per stage; Ray Data's bars as on this driver.
        datasets={name: keep_progress_bar_settings(_dataset_factory(run, name)) for name in run.stages},
    )
    trainer.fit()
    for name, marker in markers.items():
        if storage.exists(marker):
            info = json.loads(storage.read_text(marker))
            raise NonFiniteLossError(f"stage {name} stopped at step {info['step']}: {info['error']}; the last good checkpoint is kept")
    finals = {name: final_checkpoint(run.stage_uri(name), t.stage(name).steps) for name in run.stages}
    missing = [name for name, uri in finals.items() if not storage.exists(storage.join(uri, STATE_FILE))]
    if missing:
        raise RuntimeError(f"stage {missing[0]} finished without its final checkpoint {finals[missing[0]]}")
    return finals


def final_checkpoint(stage_uri: str, steps: int) -> str:
    """Where a stage's last checkpoint is (step `steps`), whether or not it is there yet."""
    return storage.join(stage_uri, checkpoint_dir(Path("."), steps).name)


def train_run(
    cfg: Config,
    manifest_uri: str,
    storage_uri: str,
    name: str,
    stages: list[str] | None = None,
    init: str | None = None,
    *,
    tags: dict[str, str] | None = None,
    callbacks: list | None = None,
    evaluate: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The curriculum: each stage starts from the previous one's weights, all in one worker group; finished stages
    are skipped, so resubmitting the same name and storage resumes where the run stopped.

    A sweep trial adds MLflow `tags` (its parent run), trainer `callbacks` (reporting to Tune) and `evaluate`
    (split, examples): the fixed batch rank 0 scores at every report.
    """
    from julnet.tracking import RunTracker, resolve_tracking_uri

    read_manifest(manifest_uri)  # a missing or bad data URI fails here, before any worker starts
    check_configured(cfg)
    chosen = [cfg.train.stage(s) for s in stages] if stages else cfg.train.stages
    storage.require_durable(storage_uri, "storage")
    run_uri = storage.join(storage_uri, name)
    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    if init:
        check_warm_start(cfg, init, tracking_uri)
    tracker = RunTracker(tracking_uri, cfg.tracking.experiment, name)
    own_tags = {"julnet.data": manifest_uri, "julnet.storage": run_uri, "julnet.code_version": code_version()}
    run_id = tracker.start(params=cfg.flat(), tags={**own_tags, **(tags or {})})
    eval_split, eval_examples = evaluate or (None, 0)
    try:
        todo, offsets, inits, finals = [], {}, {}, {}
        offset, previous, trained_before = 0, init, False  # trained_before: the stage before is trained in this job
        for stage in cfg.train.stages:
            if stage not in chosen:
                continue
            stage_uri = storage.join(run_uri, stage.name)
            done_uri = storage.join(stage_uri, DONE_FILE)
            if not storage.exists(done_uri) and latest_step(stage_uri) == stage.steps:  # finished; the job died before DONE
                storage.write_text(done_uri, json.dumps({"checkpoint": final_checkpoint(stage_uri, stage.steps), "step": stage.steps}))
            if storage.exists(done_uri):
                previous, trained_before = json.loads(storage.read_text(done_uri))["checkpoint"], False
                finals[stage.name] = previous
                log.info("stage %s already done (%s)", stage.name, previous)
            else:
                if not trained_before:
                    inits[stage.name] = previous
                todo.append(stage.name)
                offsets[stage.name], trained_before = offset, True
            offset += stage.steps
        if todo:
            run = CurriculumRun(cfg.to_dict(), todo, manifest_uri, storage_uri, name, tracking_uri, offsets, inits, eval_split, eval_examples)
            for stage_name, checkpoint in fit_curriculum(run, callbacks).items():
                storage.write_text(storage.join(run.stage_uri(stage_name), DONE_FILE),
                                   json.dumps({"checkpoint": checkpoint, "step": cfg.train.stage(stage_name).steps}))
                finals[stage_name] = checkpoint
        previous = finals[[s.name for s in cfg.train.stages if s in chosen][-1]]
        _log_outcome(tracker, previous, run_uri)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    return {"run_id": run_id, "tracking_uri": tracking_uri, "checkpoint": previous, "storage": run_uri, "trained": bool(todo)}


def _log_outcome(tracker: RunTracker, checkpoint: str | None, run_uri: str) -> None:
    """The final model (an MLflow pyfunc model around the checkpoint, see julnet.pyfunc) and the loss curves."""
    from julnet.training.export import log_pyfunc
    from julnet.visualize import loss_curves, write_png

    client = tracker.client
    history: dict[int, dict[str, float]] = {}
    for key in CURVE_KEYS:
        for m in client.get_metric_history(tracker.run_id, key):
            history.setdefault(m.step, {"step": m.step})[key] = m.value
    rows = [history[s] for s in sorted(history)]
    if rows:
        curve = loss_curves(rows, [k for k in CURVE_KEYS if k in rows[-1]])
        tracker.log_image(curve, "loss_curves.png")
        write_png(curve, storage.join(run_uri, "loss_curves.png"))
    if checkpoint:
        with tempfile.TemporaryDirectory() as tmp:
            log_pyfunc(tracker, fetch_checkpoint(checkpoint, Path(tmp)))
