"""The MLflow model registry: register what a run produced as a new version of a named model."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from julnet.tracking import RunTracker


def register_artifacts(tracker: RunTracker, model_name: str, artifact_path: str, tags: dict[str, str] | None = None) -> str:
    """A new version of `model_name` whose source is a run's artifact folder; returns the version number.

    Load it back with `models:/<model_name>/<version>` (e.g. as syncnet.weights.path).
    """
    client = tracker.client
    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    source = f"{client.get_run(tracker.run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(model_name, source=source, run_id=tracker.run_id, tags=tags or {})
    return str(version.version)
