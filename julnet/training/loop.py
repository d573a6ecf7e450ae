"""The plain single-process training loop: one stage, resumable, with progress lines and a metrics log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from julnet import progress
from julnet.config import Config, ConfigError, StageConfig, resumable_key
from julnet.data.loader import StepBatches
from julnet.losses.total import LOSS_TERMS
from julnet.models.build import build_models, build_optimizers, resolve_device
from julnet.models.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from julnet.training.step import NonFiniteLossError, StepMetrics, TrainStep

log = logging.getLogger(__name__)

Batches = Callable[[int], dict[str, Tensor]]



@dataclass
class RunResult:
    step: int
    checkpoint: Path
    metrics: dict[str, float]


def train_stage(
    cfg: Config,
    out_dir: Path,
    batches: Batches,
    stage: StageConfig,
    init: Path | None = None,
) -> RunResult:
    """Train `stage` to `stage.steps`, resuming from out_dir/checkpoints when it holds one.

    `batches(step)` gives the batch for a step, so a resumed run sees the same data as an unbroken one.
    `init` warm-starts the networks from another checkpoint (the previous stage) on a fresh run.
    """
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and isinstance(batches, StepBatches):
        batches.pin_memory = True  # page-locked batches: TrainStep's host-to-device copies are asynchronous
    models = build_models(cfg, device)
    optimizers = build_optimizers(cfg, models)
    step_fn = TrainStep(cfg, models, optimizers, device)
    ckpt_root = out_dir / "checkpoints"
    start = 0
    latest = latest_checkpoint(ckpt_root)
    if latest is not None:
        state = load_checkpoint(latest)
        _check_resumable(state["config"], cfg, latest)
        restore_training_state(state, models, optimizers, step_fn.scaler)
        start = state["step"]
        log.info("resuming %s from %s (step %d)", stage.name, latest, start)
    elif init is not None:
        load_model_weights(load_checkpoint(init), models)
        log.info("initialised networks from %s", init)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a bad --init leaves no run folder behind
    (out_dir / "config.yaml").write_text(cfg.to_yaml())

    metrics_log = out_dir / "metrics.jsonl"
    _truncate_metrics(metrics_log, after=start)
    models.train()
    progress = Progress(stage.name, start, stage.steps)
    metrics: dict[str, float] = {}
    checkpoint = latest
    # Each step's metrics stay on the device until a log or checkpoint step reads them all at once (one
    # host-device sync per log_every steps); every step still gets its own line, with its own values.
    unread: list[tuple[int, StepMetrics]] = []

    def write_unread(sink) -> None:
        steps = [s for s, _ in unread]
        try:
            rows = step_fn.read([row for _, row in unread])
        except NonFiniteLossError as exc:
            write_rows(sink, steps, exc.good)
            raise NonFiniteLossError(f"step {steps[exc.index]}: {exc}") from None
        finally:
            unread.clear()
        write_rows(sink, steps, rows)
        nonlocal metrics
        metrics = rows[-1] if rows else metrics

    def write_rows(sink, steps: list[int], rows: list[dict[str, float]]) -> None:
        for step, row in zip(steps, rows):
            sink.write(json.dumps({"step": step, "stage": stage.name, **row}) + "\n")
        sink.flush()

    with metrics_log.open("a") as sink:
        for step in range(start + 1, stage.steps + 1):
            try:
                unread.append((step, step_fn.run(batches(step), stage.kind)))
            except NonFiniteLossError:  # the host-side check (CPU) stops at the bad step: keep the steps before it
                write_unread(sink)
                raise
            log_now = step % cfg.train.log_every == 0 or step == stage.steps
            checkpoint_now = step % cfg.train.checkpoint_every == 0 or step == stage.steps
            if log_now or checkpoint_now:
                write_unread(sink)
            if log_now:
                progress.report(step, metrics)
            if checkpoint_now:
                state = training_state(cfg, models, optimizers, step_fn.scaler, step, stage.name)
                checkpoint = save_checkpoint(ckpt_root, state, cfg.train.keep_last)
    if checkpoint is None:
        raise RuntimeError(f"{out_dir}: nothing to do and no checkpoint (stage {stage.name} has {stage.steps} steps)")
    return RunResult(step=max(start, stage.steps), checkpoint=checkpoint, metrics=metrics)


def _check_resumable(saved: dict, cfg: Config, where: Path) -> None:
    """Refuse to resume a checkpoint trained with a different method or model."""
    before = Config.model_validate(saved).flat()
    now = cfg.flat()
    differ = sorted(
        k
        for k in before.keys() | now.keys()
        if before.get(k) != now.get(k) and not resumable_key(k)
    )
    if differ:
        raise ConfigError(f"cannot resume {where}: config differs in {', '.join(differ[:5])}; use a new --out")


def _truncate_metrics(path: Path, after: int) -> None:
    """Drop metric lines past the resumed step, so no step is recorded twice."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= after]
    path.write_text("".join(line + "\n" for line in keep))


class Progress:
    """A loop's progress lines with rate and ETA, one per report() (the caller picks the cadence)."""

    def __init__(self, name: str, start: int, total: int):
        self.name, self.start, self.total = name, start, total
        self._lines = progress.Progress(f"[{name}]", total, "steps", done=start, rate_unit="it", per="s", logger=log)

    def report(self, step: int, metrics: dict[str, float]) -> None:
        shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("total", *LOSS_TERMS, "mouth_l1") if k in metrics)
        self._lines.update(step, note=shown, force=True)
