"""One resolver from any model or weights URI to local files: a path, file://, s3://, runs:/ or models:/.

MLflow URIs resolve against the tracking server the config names (MLflow's own models:/ resolution asks the
process-wide registry, whatever registry was asked for, so a version's source is looked up here first).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from julnet import storage

MLFLOW_SCHEMES = ("models:/", "runs:/")


def fetch(uri: str, local_dir: Path, tracking_uri: str | None = None) -> Path:
    """The local file or folder behind `uri`, downloaded into `local_dir` when remote; MLflow URIs resolve against
    `tracking_uri` (default: as julnet.tracking resolves it)."""
    if uri.startswith(MLFLOW_SCHEMES):
        # MLflow only when an MLflow URI is asked for: the training step also runs where MLflow is not installed
        import mlflow.artifacts

        from julnet.tracking import resolve_tracking_uri

        tracking = resolve_tracking_uri(tracking_uri)
        source = model_version_source(uri, tracking) if uri.startswith("models:/") else uri
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(local_dir), tracking_uri=tracking))
    if storage.is_s3(uri):
        return storage.copy_to_local(uri, local_dir)
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {uri}")
    return path


def model_version_source(uri: str, tracking_uri: str) -> str:
    """Where `models:/name/N` or `models:/name@alias` is stored, asked of this registry."""
    from julnet.tracking import client as mlflow_client

    client = mlflow_client(tracking_uri)
    spec = uri.removeprefix("models:/").strip("/")
    if "@" in spec:
        name, alias = spec.split("@", 1)
        return client.get_model_version_by_alias(name, alias).source
    name, _, version = spec.partition("/")
    if not version.isdigit():
        raise FileNotFoundError(f"{uri}: expected models:/<name>/<version> or models:/<name>@<alias>")
    return client.get_model_version(name, version).source


def read_state(path: Path) -> Any:
    """The torch state file at `path`, on CPU, with weights_only=True: tensors and plain data, never code.

    The one reader of checkpoints and weights. A file holding anything else (a pickled object or callable, as a
    malicious checkpoint would) is refused with a one-line ValueError naming what it tried to load.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"unsupported (GLOBAL \S+)|(Unsupported global: GLOBAL \S+)", str(exc))
        what = (found.group(1) or found.group(2)) if found else str(exc).splitlines()[0][:200]
        raise ValueError(f"{path}: refused to load: it holds pickled objects, not plain weights ({what})") from None
