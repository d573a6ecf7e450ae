"""Hyperparameter sweeps with Ray Tune: each trial a Train V2 curriculum run, ASHA + Optuna, one MLflow parent run.

The pattern Ray 2.60 recommends for Train V2: every Tune trial is a small driver function that runs the usual
`train_run` (one TorchTrainer for the curriculum, the same worker loop) with a `TuneReportCallback` forwarding the workers'
reports to Tune. Rank 0 scores a fixed evaluation batch at every report (julnet.training.heldout), so ASHA and
Optuna compare trials on a metric that does not depend on the λ being swept.

Storage: Tune's experiment state lives in <storage>/<name>/ and each trial's checkpoints in
<storage>/<name>/trials/<name>-<trial id>/, so rerunning the same name and storage restores the sweep: finished
trials are kept, unfinished and errored ones resume from their latest checkpoint. The parent MLflow run is found
again by its name, and each trial's run (nested under it) by the trial's.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from julnet import storage
from julnet.config import Config, ConfigError, StageConfig
from julnet.data.loader import examples_per_epoch
from julnet.data.manifest import read_manifest
from julnet.evaluation.publish import METRIC_PREFIX, log_to_mlflow
from julnet.evaluation.result import METRIC_DIRECTIONS
from julnet.evaluation.suite import evaluate
from julnet.pretrained import check_configured
from julnet.progress import Progress
from julnet.table import aligned
from julnet.tracking import RunTracker, resolve_tracking_uri
from julnet.tracking import client as tracking_client
from julnet.training.distributed import train_run
from julnet.version import code_version
from julnet.visualize import sweep_plot, variant_plot

log = logging.getLogger(__name__)

SWEEP_TAG = "julnet.sweep"
VARIANT_TAG = "julnet.sweep.variant"
TRIAL_TAG = "julnet.trial_id"
PARENT_TAG = "mlflow.parentRunId"
RESULTS_FILE = "results.csv"
PLOT_FILE = "metric_per_trial.png"
VARIANTS_FILE = "variants.csv"
VARIANTS_PLOT_FILE = "variants.png"
TRIALS_DIR = "trials"


# ---- the search space -----------------------------------------------------------------------------------


def sweep_stages(cfg: Config) -> list[StageConfig]:
    """The curriculum stages each trial runs, in order."""
    return [stage for stage in cfg.train.stages if not cfg.sweep.stages or stage.name in cfg.sweep.stages]


def sweep_steps(cfg: Config) -> int:
    """Steps one trial runs in all (ASHA's max_t)."""
    return sum(cfg.sweep.steps or stage.steps for stage in sweep_stages(cfg))


VARIANT = "variant"  # the grid search's parameter naming a sweep.variants entry


def trial_count(cfg: Config) -> int:
    """Trials the sweep runs: num_samples, or every variant with every seed in a grid."""
    s = cfg.sweep
    return len(s.variants) * max(len(s.seeds), 1) if s.search == "grid" else s.num_samples


def check_sweep_config(cfg: Config) -> None:
    """The checks that tie the sweep section to the rest of the config, made only when sweeping (a training run
    may well set a λ to 0 or B outside the sweep's range): the stages exist, every swept λ can be scaled, the grace
    period fits in a trial, and with include_base the base values lie in the search space."""
    s = cfg.sweep
    unknown = [key for key in s.score if key not in METRIC_DIRECTIONS]
    if unknown:
        raise ConfigError(f"sweep.score: {unknown} are not evaluation-suite metrics (have {sorted(METRIC_DIRECTIONS)})")
    names = [stage.name for stage in cfg.train.stages]
    for name in s.stages:
        if name not in names:
            raise ConfigError(f"sweep.stages: no stage named {name!r} in train.stages (have {names})")
    if s.search == "grid":
        for variant in s.variants:
            try:
                trial_config(cfg, {VARIANT: variant})
            except ConfigError as exc:
                raise ConfigError(f"sweep.variants.{variant}: {exc}") from None
        return
    for key in s.loss_weights:
        if getattr(cfg.loss, key) <= 0:
            raise ConfigError(f"sweep.loss_weights: loss.{key} is {getattr(cfg.loss, key)}; only a positive λ can be swept log-uniformly")
    if s.grace_period > sweep_steps(cfg):
        raise ConfigError(f"sweep.grace_period: {s.grace_period} is more than the {sweep_steps(cfg)} steps a trial runs")
    if s.include_base:
        for key in ("bins", "alpha_max", "spacing", "assignment"):
            value, space = getattr(cfg.hist, key), getattr(s, key)
            outside = (not space[0] <= value <= space[1]) if isinstance(space, tuple) else (bool(space) and value not in space)
            if outside:
                raise ConfigError(f"sweep.{key}: {list(space)} does not hold hist.{key}={value!r}, the base trial's value "
                                  "(widen the range or set sweep.include_base=false)")


def search_space(cfg: Config) -> dict[str, Any]:
    """Tune domains keyed by the dotted config keys they set (`loss.pe`, `hist.bins`, ...); a grid sweep's are
    the variant names and the seeds."""
    s = cfg.sweep
    if s.search == "grid":
        return {VARIANT: tune.grid_search(list(s.variants)), "train.seed": tune.grid_search(s.seeds or [cfg.train.seed])}
    space: dict[str, Any] = {f"loss.{key}": tune.loguniform(getattr(cfg.loss, key) / s.loss_factor, getattr(cfg.loss, key) * s.loss_factor)
                             for key in s.loss_weights}
    if s.bins is not None:
        space["hist.bins"] = tune.randint(s.bins[0], s.bins[1] + 1)  # randint's upper bound is exclusive
    if s.alpha_max is not None:
        space["hist.alpha_max"] = tune.uniform(*s.alpha_max)
    if s.spacing:
        space["hist.spacing"] = tune.choice(s.spacing)
    if s.assignment:
        space["hist.assignment"] = tune.choice(s.assignment)
    return space


def base_point(cfg: Config) -> dict[str, Any]:
    """The base config's value of every swept key: the trial Optuna runs first when `sweep.include_base`."""
    flat = cfg.flat()
    return {key: flat[key] for key in search_space(cfg)}


def trial_config(cfg: Config, params: dict[str, Any]) -> Config:
    """The config one trial trains with: its variant's keys (a grid sweep), the sampled values, the trial's
    resources and its step counts."""
    s = cfg.sweep
    params = dict(params)
    variant = params.pop(VARIANT, None)
    values: dict[str, Any] = {
        **(s.variants[variant] if variant is not None else {}),
        **params,
        "train.num_workers": s.workers_per_trial,
        "train.cpus_per_worker": s.cpus_per_worker,
        "train.use_gpu": s.use_gpu,
    }
    if s.steps is not None:
        swept = sweep_stages(cfg)
        values.update({f"train.stages.{i}.steps": s.steps for i, stage in enumerate(cfg.train.stages) if stage in swept})
    return cfg.with_values(values)


# ---- one trial (runs inside a Tune trial actor) -------------------------------------------------------------


@dataclass(frozen=True)
class SweepPlan:
    """Everything a trial needs (plain data, pickled into Tune's experiment state)."""

    config: dict[str, Any]
    manifest: str
    trials_uri: str  # <storage>/<name>/trials
    name: str
    parent_run_id: str

    @property
    def cfg(self) -> Config:
        return Config.model_validate(self.config)


def trial_run_name(sweep: str, trial_id: str) -> str:
    """The julnet run (MLflow run name and storage folder) of one trial; stable across restores."""
    return f"{sweep}-{trial_id}"


def run_trial(plan: SweepPlan, params: dict[str, Any]) -> None:
    """Tune's trial function: the trial's curriculum as a nested MLflow run, its reports forwarded to Tune; then,
    with `sweep.score`, the evaluation suite on its final model (rerun when a restored trial finds training done)."""
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(plan.cfg, params)
    s = cfg.sweep
    outcome = train_run(
        cfg,
        plan.manifest,
        plan.trials_uri,
        trial_run_name(plan.name, trial_id),
        [stage.name for stage in sweep_stages(cfg)],
        tags={PARENT_TAG: plan.parent_run_id, SWEEP_TAG: plan.name, TRIAL_TAG: trial_id, **({VARIANT_TAG: params[VARIANT]} if VARIANT in params else {})},
        callbacks=[TuneReportCallback()],
        evaluate=(s.eval_split, s.eval_examples),
    )
    if not outcome["trained"]:  # finished before a driver died: Tune may hold no result of it, and would fail the trial
        _report_finished(outcome, cfg)
    if s.score and outcome["checkpoint"]:
        result = evaluate(outcome["checkpoint"], plan.manifest, cfg, model_id=f"runs:/{outcome['run_id']}/model")
        log_to_mlflow(result, outcome["tracking_uri"], run_id=outcome["run_id"])


def _report_finished(outcome: dict[str, Any], cfg: Config) -> None:
    """Report to Tune what the trial's MLflow run holds of its last report (it trained nothing in this session)."""
    metrics = tracking_client(outcome["tracking_uri"]).get_run(outcome["run_id"]).data.metrics
    tune.report({**{key: value for key, value in metrics.items() if key.startswith("eval_")}, "global_step": sweep_steps(cfg)})


def _trainable(plan: SweepPlan):
    """The trial function with the resources of its own process (the TorchTrainer's workers reserve theirs)."""

    def julnet_trial(params: dict[str, Any]) -> None:
        run_trial(plan, params)

    return tune.with_resources(julnet_trial, {"CPU": plan.cfg.sweep.driver_cpus})


def _trial_dirname(trial) -> str:
    return trial.trial_id


# ---- the driver ---------------------------------------------------------------------------------------------


@dataclass
class TrialRow:
    """One line of the results table."""

    trial: str
    status: str  # finished, stopped (by ASHA), error, incomplete
    steps: int
    metric: float
    run_id: str
    params: dict[str, Any]
    scores: dict[str, float]  # sweep.score's suite metrics of the final model (NaN: not scored, or unavailable)


def check_sweep_inputs(cfg: Config, manifest_uri: str) -> None:
    """Fail before Ray starts on a sweep section that does not fit the config, a bad manifest, unconfigured weights
    or an evaluation split too small to score."""
    check_sweep_config(cfg)
    manifest = read_manifest(manifest_uri)
    check_configured(cfg)
    s = cfg.sweep
    if not manifest.split(s.eval_split):
        raise ConfigError(f"sweep.eval_split: {manifest_uri} has no {s.eval_split!r} videos (preprocess 3+ videos with "
                          "preprocess.val_fraction > 0, or choose another split)")
    for stage in sweep_stages(cfg):
        available = examples_per_epoch(manifest_uri, stage, cfg.audio.window, s.eval_split)
        if available < s.eval_examples:
            raise ConfigError(f"sweep.eval_examples: {s.eval_examples} asked for, but the {s.eval_split!r} split of "
                              f"{manifest_uri} yields {available} at stage {stage.name}")


def run_sweep(cfg: Config, manifest_uri: str, storage_uri: str, name: str) -> dict[str, Any]:
    """Run (or resume) the sweep `name` under `storage_uri`; returns the parent run, the table and the best trial."""
    check_sweep_inputs(cfg, manifest_uri)
    storage.require_durable(storage_uri, "storage")
    s = cfg.sweep
    cfg = cfg.with_values({"tracking.uri": resolve_tracking_uri(cfg.tracking.uri)})  # trials log where the parent does
    fs, root = storage.filesystem(storage_uri)
    if storage.is_local(storage_uri):
        root = os.path.abspath(root)
    sweep_uri = storage.join(storage_uri, name)
    parent = RunTracker(cfg.tracking.uri, cfg.tracking.experiment, name)
    try:
        parent.start(params=cfg.flat(), tags={SWEEP_TAG: name, "julnet.data": manifest_uri, "julnet.storage": sweep_uri,
                                              "julnet.code_version": code_version()})
    except ValueError as exc:  # a resumed sweep must keep its config: Tune restores the original search anyway
        raise ConfigError(f"sweep {name!r} already exists with another config: {exc}") from None
    plan = SweepPlan(cfg.to_dict(), manifest_uri, storage.join(sweep_uri, TRIALS_DIR), name, parent.run_id)
    _warn_if_oversubscribed(cfg)
    try:
        experiment = f"{root}/{name}"
        if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
            log.info("[sweep %s] restoring from %s: finished trials are kept, the others resume", name, sweep_uri)
            tuner = tune.Tuner.restore(experiment, _trainable(plan), resume_unfinished=True, resume_errored=True, storage_filesystem=fs)
        else:
            tuner = tune.Tuner(
                _trainable(plan),
                param_space=search_space(cfg),
                tune_config=_tune_config(cfg),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=root,
                    storage_filesystem=fs,
                    failure_config=tune.FailureConfig(max_failures=s.trial_max_failures),
                    callbacks=[SweepProgress(name, s.metric, trial_count(cfg))],
                ),
            )
        grid = tuner.fit()
        rows = results_table(grid, cfg, parent)
        best = best_trial(rows, s.mode)
        summary = variant_summary(rows, s.metric, s.score)
        _log_results(parent, rows, cfg, best, summary)
    except BaseException:
        parent.end("FAILED")
        raise
    parent.end()
    outcome = {"parent_run_id": parent.run_id, "tracking_uri": cfg.tracking.uri, "metric": s.metric, "storage": sweep_uri,
               "trials": [asdict(row) for row in rows], "variants": summary}
    if best:
        outcome.update(best_trial=best.trial, best_run_id=best.run_id, best_model_uri=f"runs:/{best.run_id}/model", best_metric=best.metric)
    return outcome


def _tune_config(cfg: Config) -> tune.TuneConfig:
    s = cfg.sweep
    grid = s.search == "grid"  # every arm runs to the end: no sampler, no early stopping
    return tune.TuneConfig(
        metric=s.metric,
        mode=s.mode,
        search_alg=None if grid else OptunaSearch(points_to_evaluate=[base_point(cfg)] if s.include_base else None, seed=s.seed),
        scheduler=FIFOScheduler() if grid else FinishingASHA(
            sweep_steps(cfg), grace_period=s.grace_period, reduction_factor=s.reduction_factor, brackets=s.brackets),
        num_samples=1 if grid else s.num_samples,
        max_concurrent_trials=s.max_concurrent_trials,
        reuse_actors=False,
        trial_name_creator=_trial_dirname,
        trial_dirname_creator=_trial_dirname,
    )


class FinishingASHA(ASHAScheduler):
    """ASHA on `global_step` that never stops a trial at its last report.

    Stopping there saves no training, but Tune would kill the trial before it logs its model and closes its
    MLflow run; so the last report always continues, and the trial ends by itself. Trials that pass the last rung
    train to the end (stop_last_trials=False).
    """

    def __init__(self, final_step: int, **asha: Any):
        super().__init__(time_attr="global_step", max_t=final_step, stop_last_trials=False, **asha)
        self.final_step = final_step

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("global_step", 0) >= self.final_step:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def _warn_if_oversubscribed(cfg: Config) -> None:
    """Say so when the concurrent trials' reservations leave less than one CPU for Ray Data's decode tasks."""
    s = cfg.sweep
    concurrent = min(s.max_concurrent_trials, trial_count(cfg))
    reserved = concurrent * (s.driver_cpus + s.workers_per_trial * s.cpus_per_worker)
    cpus = ray.cluster_resources().get("CPU", 0) if ray.is_initialized() else 0
    if cpus and cpus - reserved < 1:
        log.warning("[sweep] %d concurrent trials reserve %.2f of the cluster's %.2f CPUs, leaving less than one for Ray Data's "
                    "tasks: trials may wait for data forever unless the cluster grows (lower sweep.max_concurrent_trials "
                    "or sweep.cpus_per_worker)", concurrent, reserved, cpus)


def results_table(grid, cfg: Config, parent: RunTracker) -> list[TrialRow]:
    """One row per trial, in trial order; each trial's MLflow run gets the status the sweep gave it.

    Steps and metric come from the trial's MLflow run when it has one: it holds every report, also those of a trial
    that finished just before a driver died and, rerun after the restore, found nothing left to report to Tune.
    """
    s, keys = cfg.sweep, set(search_space(cfg))
    client = parent.client
    experiment = client.get_run(parent.run_id).info.experiment_id
    nested = client.search_runs([experiment], f"tags.`{PARENT_TAG}` = '{parent.run_id}'", max_results=10000)
    runs = {run.data.tags.get(TRIAL_TAG): run for run in nested}
    rows = []
    for result in grid:
        trial = os.path.basename(result.path.rstrip("/"))
        run = runs.get(trial)
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, s.metric)) if run else []
        metrics = result.metrics or {}
        steps, value = history[-1] if history else (int(metrics.get("global_step", 0)), float(metrics.get(s.metric, math.nan)))
        status = "error" if result.error else "finished" if steps >= sweep_steps(cfg) else "stopped" if steps else "incomplete"
        params = {key: sample for key, sample in (result.config or {}).items() if key in keys}
        scored = run.data.metrics if run else {}
        scores = {key: float(scored.get(METRIC_PREFIX + key, math.nan)) for key in s.score}
        rows.append(TrialRow(trial, status, int(steps), float(value), run.info.run_id if run else "", params, scores))
        if run and status != "finished" and run.info.status == "RUNNING":  # Tune ended the trial's process under it
            client.set_terminated(run.info.run_id, "KILLED" if status == "stopped" else "FAILED")
        if run:
            client.set_tag(run.info.run_id, "julnet.sweep.status", status)
    return sorted(rows, key=lambda row: row.trial)


def best_trial(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The best finished trial by its last reported metric (a stopped trial has no final model)."""
    finished = [row for row in rows if row.status == "finished" and math.isfinite(row.metric)]
    if not finished:
        return None
    return (min if mode == "min" else max)(finished, key=lambda row: row.metric)


def variant_summary(rows: list[TrialRow], metric: str, score: list[str]) -> list[dict[str, Any]]:
    """Per grid variant, in the order rows first name it: its finished trials' count and [mean, sample std] over
    seeds of `metric` and each score (NaNs left out; std NaN with fewer than two values)."""
    groups: dict[str, list[TrialRow]] = {}
    for row in rows:
        if VARIANT in row.params and row.status == "finished":
            groups.setdefault(row.params[VARIANT], []).append(row)
    summary = []
    for variant, group in groups.items():
        stats = {}
        for key in (metric, *score):
            values = np.array([row.metric if key == metric else row.scores[key] for row in group])
            values = values[np.isfinite(values)]
            stats[key] = [float(values.mean()) if len(values) else math.nan, float(values.std(ddof=1)) if len(values) > 1 else math.nan]
        summary.append({"variant": variant, "trials": len(group), "stats": stats})
    return summary


def table_csv(rows: list[TrialRow], metric: str) -> str:
    """The results table as CSV: trial, status, steps, metric, run id, one column per swept key, then the scores."""
    keys = sorted({key for row in rows for key in row.params})
    scores = list(rows[0].scores) if rows else []
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "status", "steps", metric, "run_id", *keys, *scores])
    for row in rows:
        writer.writerow([row.trial, row.status, row.steps, row.metric, row.run_id, *(row.params.get(key, "") for key in keys),
                         *(row.scores[key] for key in scores)])
    return out.getvalue()


def variants_csv(summary: list[dict[str, Any]]) -> str:
    """variant_summary as CSV: variant, trials, then <key>_mean and <key>_std for each key."""
    keys = list(summary[0]["stats"]) if summary else []
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["variant", "trials", *(f"{key}_{what}" for key in keys for what in ("mean", "std"))])
    for entry in summary:
        writer.writerow([entry["variant"], entry["trials"], *(value for key in keys for value in entry["stats"][key])])
    return out.getvalue()


def format_table(outcome: dict[str, Any]) -> str:
    """The results table of `run_sweep`'s outcome as aligned text, best trial marked with *; a grid sweep adds the
    per-variant means ± std over seeds."""
    rows, metric = outcome["trials"], outcome["metric"]
    keys = sorted({key for row in rows for key in row["params"]})
    scores = list(rows[0]["scores"]) if rows else []
    lines = [["trial", "status", "steps", metric, *keys, *scores, "run_id"]]
    for row in rows:
        star = " *" if row["trial"] == outcome.get("best_trial") else ""
        lines.append([row["trial"] + star, row["status"], str(row["steps"]), _short(row["metric"]),
                      *(_short(row["params"].get(key, "")) for key in keys), *(_short(row["scores"][key]) for key in scores), row["run_id"]])
    text = aligned(lines)
    summary = outcome.get("variants") or []
    if summary:
        stats = list(summary[0]["stats"])
        lines = [["variant", "trials", *stats]]
        lines += [[entry["variant"], str(entry["trials"]), *(_mean_std(*entry["stats"][key]) for key in stats)] for entry in summary]
        text += "\n\nper variant, mean ± std over seeds (finished trials):\n" + aligned(lines)
    return text


def _mean_std(mean: float, std: float) -> str:
    return "n/a" if not math.isfinite(mean) else f"{mean:.4g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return str(value)


def _log_results(parent: RunTracker, rows: list[TrialRow], cfg: Config, best: TrialRow | None, summary: list[dict[str, Any]]) -> None:
    s = cfg.sweep
    parent.log_text(table_csv(rows, s.metric), RESULTS_FILE)
    parent.log_image(sweep_plot([(row.trial, row.status, row.metric) for row in rows], s.metric, best.trial if best else None), PLOT_FILE)
    if summary:
        parent.log_text(variants_csv(summary), VARIANTS_FILE)
        parent.log_image(variant_plot(summary), VARIANTS_PLOT_FILE)
    counts = {status: sum(row.status == status for row in rows) for status in ("finished", "stopped", "error", "incomplete")}
    parent.log_metrics([(0, {f"trials_{status}": float(n) for status, n in counts.items()})])
    if best:
        parent.log_metrics([(0, {f"best_{s.metric}": best.metric})])
        uri = f"runs:/{best.run_id}/model"
        parent.set_tags({"julnet.best_trial": best.trial, "julnet.best_run_id": best.run_id, "julnet.best_model_uri": uri})


class SweepProgress(tune.Callback):
    """Logs each trial's end with the sweep's progress, rate and ETA (trials ended before a resume: not in the rate)."""

    def __init__(self, name: str, metric: str, trials: int):
        self.name, self.metric, self.trials = name, metric, trials
        self.setup()

    def setup(self, total_num_samples: int = 0, **info) -> None:
        self.lines = Progress(f"[sweep {self.name}]", self.trials, "trials", per="h", logger=log)
        self.ended_here = 0

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._line(trials, trial, "ended")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._line(trials, trial, "failed")

    def _line(self, trials: list, trial, what: str) -> None:
        self.ended_here += 1
        done = len({t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")} | {trial.trial_id})
        self.lines.start = done - self.ended_here  # trials ended before this driver (a resumed sweep): not in the rate
        last = trial.last_result or {}
        self.lines.update(done, force=True, note=f"trial {trial.trial_id} {what} at step {last.get('global_step', 0)} "
                                                 f"with {self.metric}={last.get(self.metric, math.nan):.4g}")
