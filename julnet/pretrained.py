"""Loading pretrained networks from configured locations, with checksums (SPEC 2).

Weights are never downloaded. Without a configured path the caller gets a clear error, unless
the config explicitly allows random initialisation (tests, smoke runs), which is logged loudly.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from julnet import artifacts, storage
from julnet.artifacts import read_state
from julnet.config import Config, PretrainedWeights
from julnet.errors import MissingWeightsError

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(weights: PretrainedWeights, what: str, key: str, tracking_uri: str | None = None) -> dict[str, torch.Tensor] | None:
    """The configured state dict, or None when random init is explicitly allowed and no path is set.

    `key` is the config key (for messages), e.g. "perceptual.vgg"; `models:/` and `runs:/` paths resolve against
    `tracking_uri` (the config's tracking.uri; a Ray worker does not see the driver's MLFLOW_TRACKING_URI).
    """
    if weights.path is None:
        if not weights.allow_random_init:
            raise MissingWeightsError(
                f"{what} weights are not configured: set {key}.path to a local file, "
                f"or {key}.allow_random_init=true for a smoke run"
            )
        log.warning("%s runs on RANDOM weights (%s.allow_random_init=true): losses that use it are not meaningful", what, key)
        return None
    path = _local_file(weights.path, what, key, tracking_uri)
    if weights.sha256 and sha256_of(path) != weights.sha256.lower():
        raise MissingWeightsError(f"{what} weights at {path} do not match {key}.sha256")
    state = read_state(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MissingWeightsError(f"{what} weights at {path} are not a state dict")
    return state


def _local_file(uri: str, what: str, key: str, tracking_uri: str | None) -> Path:
    """A local weights file for a path, file://, s3:// or MLflow models:/ / runs:/ URI (remote ones are cached)."""
    if not artifacts.is_remote(uri):
        path = storage.local_path(uri)
        if path is None or not path.is_file():
            raise MissingWeightsError(f"{what} weights not found at {key}.path={uri}")
        return path
    cache = Path(os.environ.get("JULNET_CACHE", Path.home() / ".cache" / "julnet")) / "weights"
    try:
        fetched = artifacts.fetch(uri, cache / hashlib.sha256(uri.encode()).hexdigest()[:16], tracking_uri)
    except Exception as exc:
        raise MissingWeightsError(f"{what} weights could not be fetched from {key}.path={uri}: {exc}".splitlines()[0]) from None
    files = [fetched] if fetched.is_file() else sorted(p for p in fetched.rglob("*") if p.suffix in (".pt", ".pth"))
    if len(files) != 1:
        raise MissingWeightsError(f"{key}.path={uri} holds {len(files)} weight files (.pt/.pth); expected one")
    return files[0]


def check_configured(cfg: Config) -> None:
    """Fail early (before any cluster work) when a pretrained network has neither weights nor permission."""
    for weights, what, key in ((cfg.perceptual.vgg, "VGG-19", "perceptual.vgg"), (cfg.syncnet.weights, "SyncNet", "syncnet.weights")):
        if weights.path is None and not weights.allow_random_init:
            raise MissingWeightsError(f"{what} weights are not configured: set {key}.path, or {key}.allow_random_init=true for a smoke run")
        if weights.path and not artifacts.is_remote(weights.path) and not storage.local_path(weights.path).is_file():  # type: ignore[union-attr]
            raise MissingWeightsError(f"{what} weights not found at {key}.path={weights.path}")


def load_into(module: nn.Module, weights: PretrainedWeights, what: str, key: str, tracking_uri: str | None = None) -> nn.Module:
    """Load configured weights into `module` (strict), then freeze it for use inside a loss."""
    state = read_state_dict(weights, what, key, tracking_uri)
    if state is not None:
        loader = getattr(module, "load_public_state_dict", module.load_state_dict)
        loader(state)
    module.requires_grad_(False)
    return module.eval()
