"""MLflow tracking for one training run, used from rank 0 only: params once, metrics in batches, images.

Everything goes through an explicit `MlflowClient`, never MLflow's global active run, so several trackers can
live in one process. A run is found again by its `julnet.run_name` tag, so a restarted job resumes the same
MLflow run instead of starting a new one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from julnet import storage
from julnet.config import resumable_key
from julnet.redact import redact, redact_item, redact_tree

log = logging.getLogger(__name__)

RUN_NAME_TAG = "julnet.run_name"
"""The tag that names a julnet run inside its experiment; `start` resumes the run carrying it."""

PARAM_VALUE_CHARS = 500
"""Longest param value every MLflow backend stores (MLflow >= 2.8 takes 6000; older servers, 500)."""

PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

_T = TypeVar("_T")


def resolve_tracking_uri(configured: str | None) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else a sqlite file `runs/mlflow.db` under the working directory.

    MLflow 3 refuses plain file stores, so the embedded default is a sqlite database, not a folder. A submitted
    Ray job refuses a database inside its temporary working copy, which would be lost with the job.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'runs' / 'mlflow.db'}"
    fix = "give the job a tracking server: --set tracking.uri=http://HOST:5000, or MLFLOW_TRACKING_URI in --runtime-env-json"
    storage.require_durable(uri, "tracking", fix)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def client(uri: str) -> MlflowClient:
    """The one way julnet talks to MLflow: a client for `uri` (tracking and registry) that redacts what it sends.

    Credentials in an http(s) URI move to MLFLOW_TRACKING_USERNAME/PASSWORD in this process's environment, where
    MLflow reads them, so the URI MLflow keeps and prints ("View run ... at") carries none.
    """
    uri = credentials_to_environment(uri)
    return RedactingClient(tracking_uri=uri, registry_uri=uri)


def credentials_to_environment(uri: str) -> str:
    """`uri` without the user:password of an http(s) URI, which go to MLFLOW_TRACKING_USERNAME/PASSWORD instead."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username is None:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class RedactingClient(MlflowClient):
    """An MlflowClient whose params, tags, descriptions and text artifacts go through julnet.redact first."""

    def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict[str, Any] | None = None,
                   run_name: str | None = None) -> Any:
        return super().create_run(experiment_id, start_time, redact_tree(tags), run_name)

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        return super().log_param(run_id, key, redact_item(key, str(value)), synchronous)

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        return super().set_tag(run_id, key, redact_item(key, str(value)), synchronous)

    def log_batch(self, run_id: str, metrics: Sequence[Metric] = (), params: Sequence[Param] = (),
                  tags: Sequence[RunTag] = (), synchronous: bool | None = None) -> Any:
        params = [Param(p.key, redact_item(p.key, str(p.value))) for p in params]
        tags = [RunTag(t.key, redact_item(t.key, str(t.value))) for t in tags]
        return super().log_batch(run_id, metrics, params, tags, synchronous)

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        super().log_dict(run_id, redact_tree(dictionary), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        super().log_text(run_id, redact(text), artifact_file)

    def create_registered_model(self, name: str, tags: dict[str, Any] | None = None, description: str | None = None,
                                **kwargs: Any) -> Any:
        return super().create_registered_model(name, redact_tree(tags), description and redact(description), **kwargs)

    def create_model_version(self, name: str, source: str, run_id: str | None = None, tags: dict[str, Any] | None = None,
                             run_link: str | None = None, description: str | None = None, **kwargs: Any) -> Any:
        return super().create_model_version(name, redact(source), run_id, redact_tree(tags), run_link,
                                            description and redact(description), **kwargs)

    def set_model_version_tag(self, name: str, version: str | None = None, key: str | None = None, value: Any = None,
                              **kwargs: Any) -> None:
        super().set_model_version_tag(name, version, key, redact_item(key, str(value)), **kwargs)

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        super().set_registered_model_tag(name, key, redact_item(key, str(value)))


class RunTracker:
    """One MLflow run of one training job, identified by `run_name` within `experiment`."""

    def __init__(self, uri: str, experiment: str, run_name: str) -> None:
        if not run_name or "'" in run_name:
            raise ValueError(f"run name must be non-empty and free of single quotes: {run_name!r}")
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.client = client(uri)
        self._run_id: str | None = None

    @classmethod
    def existing(cls, uri: str, run_id: str) -> RunTracker:
        """A tracker for a run that already exists (e.g. a training run that gets evaluation results)."""
        mlflow = client(uri)
        try:
            run = mlflow.get_run(run_id)
        except MlflowException:
            raise ValueError(f"no MLflow run {run_id} at {uri}") from None
        tracker = cls(uri, mlflow.get_experiment(run.info.experiment_id).name, run.data.tags.get(RUN_NAME_TAG, run.info.run_name or run_id))
        tracker._run_id = run_id
        return tracker

    @property
    def run_id(self) -> str:
        """The MLflow run id; only after `start`."""
        if self._run_id is None:
            raise RuntimeError(f"run {self.run_name!r} has not been started")
        return self._run_id

    def start(self, params: dict[str, Any], tags: dict[str, str] | None = None) -> str:
        """Resume the run named `run_name` or create it; return its id.

        A new run gets `params`. A resumed run keeps the params it has (MLflow never changes them): any difference
        from `params` raises ValueError naming the first differing key.
        """
        wanted = {key: str(value)[:PARAM_VALUE_CHARS] for key, value in params.items()}
        experiment_id = self._experiment_id()
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_NAME_TAG}` = '{self.run_name}'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            run = found[0]
            _check_same_params(run.data.params, wanted, run.info.run_id)
            self._run_id = run.info.run_id
            added = [Param(key, value) for key, value in wanted.items() if key not in run.data.params]
            for chunk in _chunks(added, PARAMS_PER_BATCH):  # keys a newer julnet added (their defaults)
                self.client.log_batch(self._run_id, params=chunk)
            self.client.update_run(self._run_id, status="RUNNING")
            self.set_tags(tags or {})
        else:
            run = self.client.create_run(
                experiment_id, run_name=self.run_name, tags={**(tags or {}), RUN_NAME_TAG: self.run_name}
            )
            self._run_id = run.info.run_id
            for chunk in _chunks([Param(key, value) for key, value in wanted.items()], PARAMS_PER_BATCH):
                self.client.log_batch(self._run_id, params=chunk)
        return self._run_id

    def _experiment_id(self) -> str:
        return experiment_id(self.client, self.experiment)

    def log_metrics(self, rows: Iterable[tuple[int, dict[str, float]]]) -> None:
        """Log `(step, {key: value})` rows, up to 1000 points per request; non-finite values are skipped."""
        timestamp = int(time.time() * 1000)
        metrics = []
        for step, values in rows:
            for key, value in values.items():
                if math.isfinite(value):
                    metrics.append(Metric(key, float(value), timestamp, int(step)))
                else:
                    log.warning("not logging metric %s = %s at step %d: not finite", key, value, step)
        for chunk in _chunks(metrics, METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def logged_steps(self, key: str) -> list[int]:
        """The steps at which metric `key` was logged, in increasing order."""
        return sorted(metric.step for metric in self.client.get_metric_history(self.run_id, key))

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """Store an HxWx3 uint8 RGB image as the PNG artifact `artifact_file`."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload the contents of `local_dir` under `artifact_path`."""
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        """Store `data` as a JSON (or YAML, by extension) artifact."""
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store `text` as the artifact `artifact_file` (e.g. a CSV table)."""
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set (or overwrite) run tags, up to 100 per request."""
        for chunk in _chunks([RunTag(key, str(value)) for key, value in tags.items()], PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status)


def _check_same_params(logged: dict[str, str], wanted: dict[str, str], run_id: str) -> None:
    """Raise ValueError naming the first key whose logged and wanted values differ. Keys a resume may change
    (config.resumable_key) and keys only one side has (sections added or dropped by another julnet) pass."""
    for key in wanted.keys() & logged.keys():
        if logged[key] != wanted[key] and not resumable_key(key):
            raise ValueError(
                f"param {key!r} of MLflow run {run_id} is {logged[key]!r}, now {wanted[key]!r}: "
                "a resumed run cannot change its params (use a new run name)"
            )


def experiment_id(mlflow: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created (artifacts beside a sqlite database, never in ./mlruns) or restored if needed."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return mlflow.create_experiment(name, artifact_location=_artifact_location(mlflow.tracking_uri))
    if experiment.lifecycle_stage == "deleted":
        mlflow.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _artifact_location(uri: str) -> str | None:
    """For a sqlite store, a folder beside the database (MLflow's default is ./mlruns); else the server's choice."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Consecutive slices of `items` of at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
