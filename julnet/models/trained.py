"""A trained model as evaluation and inference run it: load a checkpoint from any URI, and the size to run it at.

`load_model` is the one reader of a trained talking face (generator + uncertainty module) for use (not for resuming training,
which is julnet.models.checkpoint's): it sits on the training floor so evaluation and inference both use it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from julnet import artifacts, storage
from julnet.config import Config
from julnet.errors import ModelNotFoundError, NotWeightsError, PickledObjectsError, UnsupportedModelError
from julnet.models.blocks import fold_batch_norm
from julnet.models.talking_face import TalkingFace, build_talking_face
from julnet.models.checkpoint import fetch_checkpoint, load_checkpoint

log = logging.getLogger(__name__)


def load_model(
    model: str | os.PathLike[str], device: torch.device | str = "cpu", tracking_uri: str | None = None, folded: bool = False
) -> tuple[Config, TalkingFace]:
    """(config, talking face) in eval mode from a registered model (`models:/name@alias`,
    `models:/name/3`), a run's model (`runs:/<id>/model`), an s3:// or local checkpoint directory, a run
    directory (its newest checkpoint) or a state.pt; the config is the checkpoint's own.

    MLflow URIs resolve against `tracking_uri` (default: tracking.uri's fallbacks, $MLFLOW_TRACKING_URI first).
    The talking face carries `trained_stage`: the name of the stage the checkpoint was trained on (or None).
    `folded`: batch norms folded into their convolutions once here, for a process that only runs inference.
    """
    from mlflow.exceptions import MlflowException  # here: only a failed MLflow lookup needs it

    text = os.fspath(model)
    unsupported = artifacts.unsupported_scheme(text)
    if unsupported:
        raise UnsupportedModelError(f"model URI scheme '{unsupported}:' is not supported (use models:/, runs:/, s3://, gs://, file:// or a path): {text}")
    remote = artifacts.is_remote(text)
    with tempfile.TemporaryDirectory(prefix="julnet-model-") as tmp:
        try:
            found = fetch_checkpoint(text, Path(tmp), tracking_uri)
        except (FileNotFoundError, MlflowException) as exc:
            shown = remote or storage.local_path(text).exists()  # type: ignore[union-attr]  # not remote: a local path
            detail = f" ({str(exc).splitlines()[0]})" if shown else ""
            raise ModelNotFoundError(f"model not found: {text}{detail}") from None
        try:
            state = load_checkpoint(found)
            cfg = Config.model_validate(state["config"])
            face = build_talking_face(cfg)
            face.generator.load_state_dict(state["models"]["generator"])
            face.uncertainty.load_state_dict(state["models"]["uncertainty"])
        except PickledObjectsError as exc:
            raise UnsupportedModelError(str(exc)) from None
        except NotWeightsError as exc:
            shown = text if remote else exc.path  # the file itself, where the user can see it
            raise UnsupportedModelError(f"{shown} is not a julnet checkpoint ({exc.what})") from None
        except (KeyError, TypeError, RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else ""
            raise UnsupportedModelError(f"{text} is not a julnet checkpoint ({type(exc).__name__}: {reason})") from exc
    face.trained_stage = state.get("stage")
    log.info("model %s (config %s, generator %s, stage %s)", text, cfg.name, cfg.generator.kind, face.trained_stage)
    face = face.to(device).eval()
    return cfg, fold_batch_norm(face) if folded else face


def model_resolution(cfg: Config, stage: str | None = None) -> tuple[int, int]:
    """(height, width) to run at: the stage the checkpoint was trained on, else the config's largest stage."""
    for s in cfg.train.stages:
        if s.name == stage:
            return s.height, s.width
    largest = max(cfg.train.stages, key=lambda s: s.height * s.width)
    return largest.height, largest.width
