"""The model registry on a real MLflow server: pyfunc models with lineage, aliases and the registry lock."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from julnet.config import load_config
from julnet.data.video import iter_frames, read_audio
from julnet.errors import RegistryError
from julnet.inference import load_model
from julnet.promotion import TAG_DECISION, format_decision, run_promotion
from julnet.training.export import log_pyfunc
from julnet.registry import TAG_CODE, TAG_CONFIG, TAG_DATA, TAG_DATA_SHA, TAG_SYNCNET, alias_version, register_run, registry_lock
from julnet.tracking import RunTracker
from julnet.models.checkpoint import latest_checkpoint
from tests.conftest import GRID_CLIPS
from tests.mlflow_server import MlflowServer

VIDEO, SPEECH = GRID_CLIPS


@pytest.fixture(scope="module")
def checkpoint(model_dir: Path) -> Path:
    """The tiny preset after one step on synthetic faces."""
    return latest_checkpoint(model_dir / "checkpoints")


def logged_run(server: MlflowServer, checkpoint: Path, data: str) -> str:
    """A training run's id whose model/ is the checkpoint as a pyfunc model (what train_run leaves)."""
    tracker = RunTracker(server.uri, f"test-{uuid.uuid4().hex[:8]}", "train")
    tracker.start({}, tags={"julnet.data": data, "julnet.code_version": "0.1.0+gtest"})
    log_pyfunc(tracker, checkpoint)
    tracker.end()
    return tracker.run_id


def test_a_registered_model_carries_its_lineage_loads_by_alias_and_dubs(
    mlflow_server: MlflowServer, checkpoint: Path, grid_dataset: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server.uri)
    name = f"julnet-{uuid.uuid4().hex[:6]}"
    run_id = logged_run(mlflow_server, checkpoint, grid_dataset)
    version = register_run(client, run_id, name, alias="champion")
    assert register_run(client, run_id, name, alias="champion").version == version.version, "registering twice adds nothing"
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    tags = client.get_model_version(name, version.version).tags
    assert tags[TAG_DATA] == grid_dataset
    assert tags[TAG_DATA_SHA] == hashlib.sha256(Path(grid_dataset).read_bytes()).hexdigest()
    assert tags[TAG_CODE] == "0.1.0+gtest"
    assert "name: tiny" in tags[TAG_CONFIG] and tags[TAG_SYNCNET].startswith("random init")
    assert alias_version(client, name, "champion").version == version.version
    assert alias_version(client, name, "challenger") is None

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    cfg, face = load_model(f"models:/{name}@champion")
    assert cfg.name == "tiny" and face.trained_stage == "frame"

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    [result] = model.predict({"video": VIDEO.read_bytes(), "audio": str(SPEECH), "epistemic_samples": 2, "epistemic_video": True})
    expected = round(len(read_audio(SPEECH, 16000)) / 16000 * 25)
    assert result["summary"]["frames"] == expected == len(result["frames"])
    for key in ("video", "epistemic_video"):
        out = tmp_path / f"{key}.mp4"
        out.write_bytes(result[key])
        assert sum(1 for _ in iter_frames(out)) == expected, key
    assert np.isfinite([(f["sigma_mean"], f["epistemic_mean"]) for f in result["frames"]]).all()
    assert "uncertainty_video" not in result and result["summary"]["epistemic_mean"]["mean"] >= 0

    with pytest.raises(ValueError, match="lacks audio"):
        model.predict([{"video": str(VIDEO)}])


def test_a_run_without_a_model_is_refused(mlflow_server: MlflowServer) -> None:
    tracker = RunTracker(mlflow_server.uri, f"test-{uuid.uuid4().hex[:8]}", "empty")
    tracker.start({})
    client = MlflowClient(mlflow_server.uri)
    with pytest.raises(RegistryError, match="has no julnet model"):
        register_run(client, tracker.run_id, "julnet-none")
    assert not client.search_registered_models("name='julnet-none'"), "a refused run leaves the registry as it was"


def test_the_registry_lock_admits_one_holder_at_a_time(mlflow_server: MlflowServer) -> None:
    name = f"julnet-{uuid.uuid4().hex[:6]}"
    inside, overlaps = [], []

    def hold() -> None:
        with registry_lock(MlflowClient(mlflow_server.uri), name, timeout_s=60):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.3)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []

    client = MlflowClient(mlflow_server.uri)
    with registry_lock(client, name), pytest.raises(RegistryError, match="could not lock"):
        with registry_lock(client, name, timeout_s=0.5):
            pass
    with registry_lock(client, name, timeout_s=1):  # released after the failure above
        pass
    client.create_registered_model(f"{name}.lock")  # left by a process that died
    with registry_lock(client, name, timeout_s=5, stale_s=0.0):
        pass


# ---- promotion ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worse_checkpoint(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with its image head cut off: it paints every face black, so its PSNR is far lower."""
    out = tmp_path_factory.mktemp("worse") / checkpoint.name
    shutil.copytree(checkpoint, out)
    state = torch.load(out / "state.pt", weights_only=True)
    generator = state["models"]["generator"]
    generator["face_decoder.to_image.weight"].zero_()
    generator["face_decoder.to_image.bias"].fill_(-20.0)
    torch.save(state, out / "state.pt")
    return out


@pytest.fixture
def promotion(mlflow_server: MlflowServer) -> tuple[MlflowClient, str, object]:
    """A client, a fresh registered-model name and the settings promotions of it use."""
    name = f"julnet-{uuid.uuid4().hex[:6]}"
    return MlflowClient(mlflow_server.uri), name, promotion_settings(mlflow_server, name)


def promotion_settings(server: MlflowServer, name: str):
    cfg = load_config("tiny", [f"tracking.uri={server.uri}", "tracking.experiment=test-promotion", f"promotion.model_name={name}",
                               "evaluation.max_frames=12"])
    cfg.promotion.guards = {"psnr": 0.5}
    return cfg


def decision_runs(client: MlflowClient) -> int:
    experiment = client.get_experiment_by_name("test-promotion-promotions")
    return len(client.search_runs([experiment.experiment_id])) if experiment else 0


def test_only_a_better_challenger_becomes_champion_and_promoting_twice_changes_nothing(
    mlflow_server: MlflowServer, promotion, checkpoint: Path, worse_checkpoint: Path, heldout: str
) -> None:
    client, name, settings = promotion
    worse_run, better_run = logged_run(mlflow_server, worse_checkpoint, heldout), logged_run(mlflow_server, checkpoint, heldout)

    first = run_promotion(settings, heldout, run_id=worse_run)
    assert first.promoted and first.champion_before is None and "no champion yet" in first.reason
    worse = first.challenger

    second = run_promotion(settings, heldout, run_id=better_run)
    better = second.challenger
    assert second.promoted and second.champion_before == worse, format_decision(second)
    primary = second.checks[0]
    assert primary.metric == "psnr_mouth" and primary.change > 3.0, "black mouths are far worse than the real model's"
    assert alias_version(client, name, "champion").version == better
    assert json.loads(client.get_model_version(name, better).tags[TAG_DECISION])["promoted"] is True

    third = run_promotion(settings, heldout, version=worse)
    assert not third.promoted and third.champion_before == better and third.reason.startswith("psnr_mouth: improved by -")
    assert alias_version(client, name, "champion").version == better

    tags = {v.version: v.tags for v in client.search_model_versions(f"name='{name}'")}
    runs = decision_runs(client)
    again = run_promotion(settings, heldout, version=worse)
    assert not again.promoted and again.signature() == third.signature()
    assert {v.version: v.tags for v in client.search_model_versions(f"name='{name}'")} == tags, "nothing re-evaluated or re-tagged"
    assert decision_runs(client) == runs, "no second log entry for the same decision"
    assert run_promotion(settings, heldout, version=better).reason == "already the champion"
    assert alias_version(client, name, "champion").version == better


def test_concurrent_promotions_leave_exactly_one_winner(
    mlflow_server: MlflowServer, promotion, checkpoint: Path, worse_checkpoint: Path, heldout: str
) -> None:
    client, name, settings = promotion
    assert run_promotion(settings, heldout, run_id=logged_run(mlflow_server, worse_checkpoint, heldout)).promoted
    twins = [register_run(client, logged_run(mlflow_server, checkpoint, heldout), name, alias=None).version for _ in range(2)]

    decisions: dict[str, object] = {}
    errors: list[BaseException] = []

    def promote(version: str) -> None:
        try:
            decisions[version] = run_promotion(settings, heldout, version=version)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in twins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    winners = [v for v, d in decisions.items() if d.promoted]
    assert len(winners) == 1, [format_decision(d) for d in decisions.values()]
    [loser] = [v for v in twins if v not in winners]
    assert alias_version(client, name, "champion").version == winners[0]
    assert decisions[loser].champion_before == winners[0], "the loser was compared again with the new champion"
    assert not client.search_registered_models(f"name='{name}.lock'"), "the lock is released"
