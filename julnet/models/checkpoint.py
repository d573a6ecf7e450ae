"""Checkpoints: every trained network, all optimizers, the grad scaler, the step, RNG states and the config.

A checkpoint is a directory `step-NNNNNNNN/` holding `state.pt` (loadable with weights_only=True) and
a readable `config.yaml`. It is written under a hidden temporary name and renamed into place, so a
half-written checkpoint is never visible under its final name.

Run directories: julnet train writes <out>/checkpoints/step-N/; the Ray job (distributed.train_run) writes
<storage>/<name>/<stage>/step-N/ per curriculum stage. locate_checkpoint resolves both (and every other form a
model URI takes) for every caller: generate, evaluate, pyfunc, batch and --init.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from julnet import artifacts
from julnet.config import Config, ConfigError
from julnet.models.build import Models, Optimizers

STATE_FILE = "state.pt"
FORMAT_VERSION = 2  # 2: the generator's down-blocks are stride-2 convolutions (were conv + average pooling)
_NAME = re.compile(r"^step-(\d{8,})$")


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
    }


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", rng["numpy"]["key"].numpy().astype(np.uint32), rng["numpy"]["pos"], 0, 0.0))


def training_state(
    cfg: Config, models: Models, optimizers: Optimizers, scaler: torch.amp.GradScaler, step: int, stage: str
) -> dict[str, Any]:
    """Everything needed to continue training bit for bit."""
    return {
        "format_version": FORMAT_VERSION,
        "step": step,
        "stage": stage,
        "config": cfg.public_dict(),  # credentials in URIs stay in the process that trains
        "models": {name: module.state_dict() for name, module in models.trained().items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.all().items()},
        "scaler": scaler.state_dict(),
        "rng": capture_rng(),
    }


def restore_training_state(state: dict[str, Any], models: Models, optimizers: Optimizers, scaler: torch.amp.GradScaler) -> None:
    load_model_weights(state, models)
    for name, opt in optimizers.all().items():
        opt.load_state_dict(state["optimizers"][name])
    scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])


def load_model_weights(state: dict[str, Any], models: Models) -> None:
    """Weights only (a warm start from an earlier stage or a registered model), of the same generator family."""
    check_same_family(models.trained()["generator"].kind, state)
    for name, module in models.trained().items():
        module.load_state_dict(state["models"][name])


def check_same_family(ours: str, state: dict[str, Any]) -> None:
    """ConfigError, in one line, when the checkpoint `state` holds another generator family than `ours`."""
    theirs = checkpoint_kind(state)
    if ours != theirs:
        raise ConfigError(f"generator.kind={ours} cannot load a checkpoint of generator.kind={theirs}: train a {ours} model from scratch or use a {theirs} config")


def check_warm_start(cfg: Config, init: str, tracking_uri: str | None = None) -> None:
    """A warm start that cannot work (no checkpoint there, another format, another generator family) fails here, in
    one line, before any worker starts; the workers fetch it again."""
    with tempfile.TemporaryDirectory(prefix="julnet-init-") as tmp:
        check_same_family(cfg.generator.kind, load_checkpoint(fetch_checkpoint(init, Path(tmp), tracking_uri)))


def checkpoint_kind(state: dict[str, Any]) -> str:
    """The generator family a checkpoint holds (checkpoints from before generator.kind hold the JULNet generator)."""
    return state["config"].get("generator", {}).get("kind", "julnet")


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def write_checkpoint_files(directory: Path, state: dict[str, Any]) -> None:
    """The files of one checkpoint, into an existing directory (the local loop's or one Ray persists)."""
    torch.save(state, directory / STATE_FILE)
    (directory / "config.yaml").write_text(Config.model_validate(state["config"]).to_yaml())


def save_checkpoint(root: Path, state: dict[str, Any], keep_last: int) -> Path:
    """Write atomically to root/step-N/, then keep only the newest `keep_last` checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, state["step"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        write_checkpoint_files(tmp, state)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=root))
            os.rename(final, trash / final.name)
            shutil.rmtree(trash)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def locate_checkpoint(root: Path) -> Path:
    """The checkpoint a model path names, one rule for every caller: a state file or checkpoint directory itself;
    else the newest checkpoint of a run directory (`run_checkpoint`); else the one checkpoint a folder holds (an
    MLflow model keeps it under artifacts/)."""
    if root.is_file() or (root / STATE_FILE).is_file():
        return root
    newest = run_checkpoint(root)
    if newest is not None:
        return newest
    found = sorted(root.rglob(STATE_FILE)) if root.is_dir() else []
    if len(found) != 1:
        raise FileNotFoundError(f"no checkpoint in {root}" if not found else f"{root} holds {len(found)} checkpoints; name one")
    return found[0].parent


def run_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint of a run directory, whichever trainer wrote it (None if root is no run directory).

    A folder of step-N checkpoints counts itself; else its sub-folders of them do: `checkpoints/` (julnet train)
    or one per stage (the Ray job: <storage>/<name>/<stage>/step-N). Of several, the last stage of the
    curriculum wins, in the order of train.stages in a checkpoint's config (train_run gives every stage the same).
    """
    own = latest_checkpoint(root)
    if own is not None or not root.is_dir():
        return own
    newest = {d.name: c for d in sorted(root.iterdir()) if (c := latest_checkpoint(d)) is not None}
    if len(newest) <= 1:
        return next(iter(newest.values()), None)
    order = _stage_order(next(iter(newest.values())))
    unknown = sorted(set(newest) - set(order))
    if unknown:
        raise FileNotFoundError(f"{root} holds checkpoints in {sorted(newest)}, and {unknown} is no stage of its config {order}; name one")
    return newest[max(newest, key=order.index)]


def _stage_order(checkpoint: Path) -> list[str]:
    """Stage names in curriculum order, from a checkpoint's config.yaml (read as YAML: no torch.load of the state)."""
    try:
        data = yaml.safe_load((checkpoint / "config.yaml").read_text())
        return [stage["name"] for stage in data["train"]["stages"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise FileNotFoundError(f"{checkpoint}: cannot read the curriculum's stage order from config.yaml ({type(exc).__name__})") from None


def fetch_checkpoint(uri: str, local_dir: Path, tracking_uri: str | None = None) -> Path:
    """The checkpoint behind a path, file://, s3:// or an MLflow models:/ or runs:/ URI, fetched into `local_dir`
    when remote (julnet.artifacts.fetch); MLflow URIs resolve against `tracking_uri`."""
    return locate_checkpoint(artifacts.fetch(uri, local_dir, tracking_uri))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint (a directory, its state.pt, or a run directory resolved by locate_checkpoint, so `--init`
    takes what `--model` takes), loaded on CPU with weights_only=True."""
    found = locate_checkpoint(path)
    file = found / STATE_FILE if found.is_dir() else found
    state = artifacts.read_state(file)
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{file}: checkpoint format {version} is not {FORMAT_VERSION}")
    return state
