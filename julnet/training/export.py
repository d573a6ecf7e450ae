"""A trained checkpoint as an MLflow model of julnet's pyfunc flavour (julnet.pyfunc serves it).

Writing the model needs no inference code, so training logs its final model from here without importing the
floors above it; `pyfunc_model.py` (MLflow "models from code") names the class that loads and serves it.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import mlflow.pyfunc

import julnet
from julnet.tracking import RunTracker
from julnet.version import code_version

CHECKPOINT_ARTIFACT = "checkpoint"
MODEL_FILE = Path(julnet.__file__).with_name("pyfunc_model.py")


def save_pyfunc(checkpoint_dir: Path, path: Path) -> None:
    """Write an MLflow model directory at `path` around a checkpoint directory (state.pt, config.yaml), with the
    julnet code and its requirements, so it loads where julnet is not installed."""
    with tempfile.TemporaryDirectory(prefix="julnet-pyfunc-") as tmp:
        staged = Path(tmp) / CHECKPOINT_ARTIFACT  # the folder's name is the one it gets inside the model
        shutil.copytree(checkpoint_dir, staged)
        _save(staged, path)


def _save(checkpoint_dir: Path, path: Path) -> None:
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(MODEL_FILE),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_dir)},
        code_paths=[str(Path(julnet.__file__).parent)],
        pip_requirements=_requirements(),
        metadata={"julnet_code_version": code_version(), "checkpoint": "artifacts/checkpoint/state.pt (torch.load(weights_only=True))"},
    )


def log_pyfunc(tracker: RunTracker, checkpoint_dir: Path, artifact_path: str = "model") -> None:
    """Log a checkpoint as the run's MLflow model under `artifact_path` (`runs:/<run>/model`)."""
    with tempfile.TemporaryDirectory(prefix="julnet-pyfunc-") as tmp:
        save_pyfunc(checkpoint_dir, Path(tmp) / artifact_path)
        tracker.log_artifacts(Path(tmp) / artifact_path, artifact_path)


def _requirements() -> list[str]:
    """julnet's own runtime requirements (extras left out), as pip lines."""
    try:
        found = requires("julnet") or []
    except PackageNotFoundError:
        return []
    return [r for r in found if "extra ==" not in r]
