"""One resolver from any model or weights URI to local files: a path, file://, s3://, runs:/ or models:/.

MLflow URIs resolve against the tracking server the config names (MLflow's own models:/ resolution asks the
process-wide registry, whatever registry was asked for, so a version's source is looked up here first).
"""

from __future__ import annotations

import codecs
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from julnet import storage
from julnet.errors import NotWeightsError, PickledObjectsError

MLFLOW_SCHEMES = ("models:/", "runs:/")


def unsupported_scheme(uri: str) -> str | None:
    """The scheme of `uri` when `fetch` cannot resolve it (e.g. "http"), else None."""
    return None if uri.startswith(MLFLOW_SCHEMES) else storage.unsupported_scheme(uri)


def is_remote(uri: str) -> bool:
    """Whether `fetch` downloads `uri` (an MLflow or object-store URI) rather than finding it here."""
    return uri.startswith(MLFLOW_SCHEMES) or not storage.is_local(uri)


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
    if not storage.is_local(uri):
        return storage.copy_to_local(uri, local_dir)
    path = storage.local_path(uri)
    if path is None or not path.exists():
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

    The one reader of checkpoints and weights. A torch file holding anything else (a pickled object or callable, as
    a malicious checkpoint would) is refused with a one-line PickledObjectsError naming what it tried to load; a
    file torch did not write (text, YAML, random bytes, another zip) is a NotWeightsError saying what it is instead.
    Neither passes on torch's advice to load the file with weights_only=False.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as exc:
        # torch names the object ("unsupported GLOBAL posix.system", "Unsupported global: GLOBAL pathlib.PosixPath")
        # or the opcode it stopped at; its advice on loading the file anyway is left out
        found = re.search(r"(GLOBAL [\w.]+)", str(exc)) or (_torch_zip(path) and re.search(r"WeightsUnpickler error:\s*(.+)", str(exc)))
        if found:
            raise PickledObjectsError(f"{path}: refused to load: it holds pickled objects, not plain weights ({found.group(1).strip()})") from None
        raise NotWeightsError(path, _file_kind(path, exc)) from None
    except Exception as exc:  # noqa: BLE001 - whatever torch's readers raise on a file that is not theirs
        raise NotWeightsError(path, _file_kind(path, exc)) from None


def _torch_zip(path: Path) -> bool:
    """Whether `path` is a zip archive as torch.save writes it (a folder holding data.pkl)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[-1] == "data.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _file_kind(path: Path, exc: Exception) -> str:
    """What a file torch could not read is, in words: empty, a damaged torch file, another zip, text or binary."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):  # a zip, as torch.save writes
        if _torch_zip(path):
            return f"a damaged torch file: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        return "a zip archive that torch did not write" if zipfile.is_zipfile(path) else "a truncated or damaged zip archive"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # not final: a character cut at the 4096th byte is no error
        text = b"\0" not in head
    except UnicodeDecodeError:
        text = False
    return "a text file" if text else "binary data in no format torch reads"
