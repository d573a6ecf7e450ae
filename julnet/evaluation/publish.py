"""Where an evaluation result goes: a JSON file (any storage URI) with its sparsification plot beside it, and MLflow.

MLflow gets either the candidate's own run (metrics prefixed `eval_`, artifacts under `evaluation/<data hash>/`)
or a linked evaluation run named after what was measured (model weights, data, code and settings), so
evaluating the same thing again lands in the same run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

import numpy as np
from mlflow.exceptions import MlflowException

from julnet.config import flatten_keys
from julnet.evaluation.result import EvaluationResult
from julnet.tracking import RunTracker
from julnet.visualize import reliability_plot, risk_coverage_plot, sparsification_plot, write_png

log = logging.getLogger(__name__)

EVALUATION_KIND = "evaluation"
METRIC_PREFIX = "eval_"  # what a suite metric is called on the run it is logged to: eval_psnr_mouth, ...
_RUNS_URI = re.compile(r"^runs:/([^/]+)")
_MODELS_URI = re.compile(r"^models:/([^/@]+)(?:/(\d+)|@(.+))$")
PLOTS = ("sparsification", "reliability", "risk_coverage")  # what plots() draws, the last two when the result has them


def sparsification_image(result: EvaluationResult) -> np.ndarray:
    """The sparsification curves of σ and ε̂ (and the epistemic map) with their oracle, titled with what was evaluated."""
    ause = {name: result.metrics[f"ause_{name}"] for name in ("sigma", "error_pred", "epistemic") if f"ause_{name}" in result.metrics}
    title = f"{result.model} on {result.data} ({result.split}, {result.counts['frames']} frames)"
    return sparsification_plot(result.sparsification, ause, title)


def plots(result: EvaluationResult) -> dict[str, np.ndarray]:
    """Every plot of a result by name: sparsification, and (when the result has them) the reliability diagram of σ
    and the risk-coverage of the per-frame confidence `julnet generate` reports."""
    title = f"{result.model} on {result.data} ({result.split}, {result.counts['frames']} frames)"
    images = {"sparsification": sparsification_image(result)}
    curves = result.calibration_curves
    if "reliability" in curves and "uce_sigma" in result.metrics:
        images["reliability"] = reliability_plot(curves["reliability"], result.metrics["uce_sigma"], title)
    if "risk_coverage" in curves:
        rc = curves["risk_coverage"]
        images["risk_coverage"] = risk_coverage_plot(rc["coverage"], rc["risk"], rc["oracle"], result.metrics["aurc_confidence"], title)
    return images


def plot_uri(json_uri: str, name: str = "sparsification") -> str:
    """Where a plot of a result written to `json_uri` goes: beside it, `<name>.<plot>.png`."""
    return json_uri.removesuffix(".json") + f".{name}.png"


def result_files(uri: str) -> dict[str, str]:
    """Every file save_result may write for `uri`, by what it is: the result, then each plot plots() can draw."""
    return {"result": uri, **{f"{name} plot": plot_uri(uri, name) for name in PLOTS}}


def save_result(result: EvaluationResult, uri: str) -> str:
    """Write the result as JSON to `uri` and its plots beside it (each atomic); return the sparsification plot's URI."""
    from julnet import storage

    for name, image in plots(result).items():
        write_png(image, plot_uri(uri, name))
    storage.write_text(uri, result.to_json())
    return plot_uri(uri)


def evaluation_tags(result: EvaluationResult, prefix: str) -> dict[str, str]:
    """What was measured, with what: the tags an evaluation leaves on a run (and promotion can search by)."""
    tags = {
        f"{prefix}evaluated_model": result.model,
        f"{prefix}evaluated_model_sha256": result.model_sha256,
        f"{prefix}data": result.data,
        f"{prefix}data_sha256": result.data_sha256,
        f"{prefix}split": f"{result.split} by {result.split_by}",
        f"{prefix}code_version": result.code_version,
        f"{prefix}lse_source": result.lse_source or "unavailable",
    }
    tags.update({f"{prefix}unavailable.{k}": v for k, v in result.unavailable.items()})
    return tags


def log_to_mlflow(result: EvaluationResult, tracking_uri: str, *, run_id: str | None = None, experiment: str = "julnet") -> str:
    """Log `result` on the existing run `run_id`, or on a linked evaluation run in `experiment`; return the run id."""
    if run_id is not None:
        tracker = RunTracker.existing(tracking_uri, run_id)
        tracker.log_metrics([(0, {METRIC_PREFIX + k: v for k, v in result.metrics.items()})])
        tracker.set_tags(evaluation_tags(result, "julnet.eval."))
        folder = f"evaluation/{result.data_sha256[:12]}"
    else:
        tracker = RunTracker(tracking_uri, experiment, f"eval-{evaluation_identity(result)[:16]}")
        tags = {"julnet.kind": EVALUATION_KIND, **evaluation_tags(result, "julnet.")}
        evaluated = evaluated_run_id(tracker, result.model)
        if evaluated:
            tags["julnet.evaluated_run_id"] = evaluated
        tracker.start(params=flatten_keys({"evaluation": result.settings}), tags=tags)
        tracker.log_metrics([(0, result.metrics)])
        folder = "evaluation"
    tracker.log_dict(result.to_dict(), f"{folder}/result.json")
    for name, image in plots(result).items():
        tracker.log_image(image, f"{folder}/{name}.png")
    if run_id is None:
        tracker.end()
    log.info("evaluation logged to MLflow run %s (%s)", tracker.run_id, tracking_uri)
    return tracker.run_id


def evaluation_identity(result: EvaluationResult) -> str:
    """sha256 of what decides an evaluation's numbers: model weights, data, code version, settings and metric networks."""
    key = [result.model_sha256, result.data_sha256, result.code_version, result.settings, result.networks]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def evaluated_run_id(tracker: RunTracker, model: str) -> str | None:
    """The MLflow run that produced a `runs:/` or `models:/` model, when the tracking server knows it."""
    if match := _RUNS_URI.match(model):
        return match.group(1)
    if match := _MODELS_URI.match(model):
        name, version, alias = match.groups()
        try:
            found = tracker.client.get_model_version(name, version) if version else tracker.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            log.warning("not tagging the evaluated run: %s is not in %s (%s)", model, tracker.uri, str(exc).splitlines()[0])
            return None
        return found.run_id
    return None
