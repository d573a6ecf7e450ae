"""The MLflow model registry: model versions with their lineage, aliases, and a registry-wide lock.

A trained model is registered from its run's `model/` folder (an MLflow pyfunc model, julnet.pyfunc). Each
version carries its lineage as tags: the config, the data manifest's URI and hash, the code version, the
SyncNet it was trained against and the source run. Aliases (`challenger`, `champion`) replace MLflow's
deprecated stages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from julnet.config import Config
from julnet.data.manifest import manifest_sha256
from julnet.errors import RegistryError
from julnet.tracking import RunTracker

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "model/artifacts/checkpoint/config.yaml"
TAG_CONFIG = "julnet.config"
TAG_CONFIG_SHA = "julnet.config_sha256"
TAG_DATA = "julnet.data"
TAG_DATA_SHA = "julnet.data_sha256"
TAG_CODE = "julnet.code_version"
TAG_SYNCNET = "julnet.syncnet"
TAG_RUN = "julnet.source_run"
TAG_RAW = "julnet.raw"  # the raw prefix a retraining run preprocessed (julnet.freshness)
TAG_RAW_SHA = "julnet.raw_sha256"  # its fingerprint: keys, sizes and ETags
TAG_RAW_FILES = "julnet.raw_files"
RAW_TAGS = (TAG_RAW, TAG_RAW_SHA, TAG_RAW_FILES)


def _exists_error(exc: MlflowException, code: int) -> bool:
    return exc.error_code == ErrorCode.Name(code)


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model unless it exists (safe when several processes race to create it)."""
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if not _exists_error(exc, RESOURCE_ALREADY_EXISTS):
            raise


def register_artifacts(tracker: RunTracker, model_name: str, artifact_path: str, tags: dict[str, str] | None = None) -> str:
    """A new version of `model_name` whose source is a run's artifact folder; returns the version number.

    Load it back with `models:/<model_name>/<version>` (e.g. as syncnet.weights.path).
    """
    client = tracker.client
    ensure_registered_model(client, model_name)
    source = f"{client.get_run(tracker.run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(model_name, source=source, run_id=tracker.run_id, tags=tags or {})
    return str(version.version)


def lineage(client: MlflowClient, run: Run) -> dict[str, str]:
    """Lineage tags of the model a training run logged: config, data URI and hash, code and SyncNet versions, and
    the raw data's fingerprint when a retraining run tagged the run with it."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="julnet-lineage-") as tmp:
        try:
            text = Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)).read_text()
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"run {run_id} has no julnet model ({CONFIG_ARTIFACT}): {str(exc).splitlines()[0]}") from None
    cfg = yaml.safe_load(text)
    data = run.data.tags.get("julnet.data", "")
    try:
        data_sha = manifest_sha256(data) if data else "unknown: the run records no data manifest"
    except (OSError, ValueError) as exc:
        data_sha = f"unknown: {str(exc).splitlines()[0]}"
    weights = cfg.get("syncnet", {}).get("weights", {})
    syncnet = weights.get("path") or ("random init (syncnet.weights.allow_random_init)" if weights.get("allow_random_init") else "none")
    return {
        TAG_CONFIG: text,
        TAG_CONFIG_SHA: hashlib.sha256(text.encode()).hexdigest(),
        TAG_DATA: data or "unknown",
        TAG_DATA_SHA: data_sha,
        TAG_CODE: run.data.tags.get("julnet.code_version", "unknown"),
        TAG_SYNCNET: syncnet,
        TAG_RUN: run_id,
        **{tag: run.data.tags[tag] for tag in RAW_TAGS if tag in run.data.tags},
    }


def register_run(client: MlflowClient, run_id: str, model_name: str, alias: str | None = "challenger") -> ModelVersion:
    """Register a training run's model as a new version with its lineage, and point `alias` at it.

    A run already registered under `model_name` keeps its version: registering twice adds nothing.
    """
    run = client.get_run(run_id)
    source = f"{run.info.artifact_uri}/{MODEL_ARTIFACT}"
    same = [v for v in client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'") if v.source == source]
    if same:
        version = min(same, key=lambda v: int(v.version))
        log.info("run %s is already models:/%s/%s", run_id, model_name, version.version)
    else:
        tags = lineage(client, run)  # a run without a julnet model fails here, before the registry changes
        ensure_registered_model(client, model_name)
        version = client.create_model_version(model_name, source=source, run_id=run_id, tags=tags)
    if alias:
        client.set_registered_model_alias(model_name, alias, version.version)
    log.info("registered run %s as models:/%s/%s%s", run_id, model_name, version.version, f" (@{alias})" if alias else "")
    return version


def alias_version(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _exists_error(exc, RESOURCE_DOES_NOT_EXIST) or "not found" in str(exc).lower():
            return None
        raise


@contextmanager
def registry_lock(client: MlflowClient, model_name: str, timeout_s: float = 120.0, stale_s: float = 900.0) -> Iterator[None]:
    """Mutual exclusion across processes and machines for changes to `model_name`'s aliases.

    The lock is a registered model `<name>.lock`: creating it succeeds for exactly one caller (the registry's
    unique name). A lock older than `stale_s` is taken to be left by a dead holder and removed.
    """
    lock = f"{model_name}.lock"
    owner = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(lock, description=json.dumps(owner))
            break
        except MlflowException as exc:
            if not _exists_error(exc, RESOURCE_ALREADY_EXISTS):
                raise
        _break_if_stale(client, lock, stale_s)
        if time.monotonic() > deadline:
            raise RegistryError(f"could not lock {model_name} within {timeout_s:.0f} s: registered model {lock} is held")
        time.sleep(0.2)
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _break_if_stale(client: MlflowClient, lock: str, stale_s: float) -> None:
    try:
        held = client.get_registered_model(lock)
    except MlflowException:
        return
    age = time.time() - held.creation_timestamp / 1000
    if age > stale_s:
        log.warning("removing stale lock %s (%.0f s old, held by %s)", lock, age, held.description)
        try:
            client.delete_registered_model(lock)
        except MlflowException:
            pass


def pretrain_and_register(cfg: Config, data: str, name: str, steps: int, model_name: str) -> dict[str, Any]:
    """Pre-train the SyncNet in a Ray task, log the run `name` to MLflow and register its weights as `model_name`."""
    from julnet.tracking import resolve_tracking_uri
    from julnet.training.syncnet import log_pretraining, pretrain_on_ray
    from julnet.version import code_version

    metrics, weights = pretrain_on_ray(cfg, data, steps)
    tracker = RunTracker(resolve_tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, name)
    tracker.start(params=cfg.flat(), tags={"julnet.kind": "syncnet", "julnet.data": data, "julnet.code_version": code_version()})
    log_pretraining(tracker, steps, metrics, weights)
    accuracy = metrics["eval"]["sync_accuracy"]
    version = register_artifacts(tracker, model_name, "syncnet", {"heldout_sync_accuracy": f"{accuracy:.4f}", "heldout": metrics["heldout"]})
    tracker.end()
    return {"model": f"models:/{model_name}/{version}", "heldout": metrics["heldout"], "sync_accuracy": accuracy, "run_id": tracker.run_id}
