"""MLflow tracking against a real tracking server and the embedded sqlite default; the pictures it logs."""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from julnet.tracking import PARAM_VALUE_CHARS, RUN_NAME_TAG, RunTracker, resolve_tracking_uri
from julnet.visualize import COLUMNS, HEADER_HEIGHT, loss_curves, sample_grid, write_png
from tests.mlflow_server import MlflowServer


@pytest.fixture
def experiment() -> str:
    """A fresh experiment name, so tests sharing the session's server never see each other's runs."""
    return f"test-{uuid.uuid4().hex[:8]}"


# --- against the real tracking server -------------------------------------------------------------------------


def test_start_creates_run_with_params_then_resumes_it(mlflow_server: MlflowServer, experiment: str) -> None:
    params = {f"p{i:03d}": i for i in range(150)}  # more than one 100-param batch
    params["long"] = "x" * 700
    tracker = RunTracker(mlflow_server.uri, experiment, "run-a")
    run_id = tracker.start(params, tags={"stage": "frame"})

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "run-a"
    assert run.data.tags[RUN_NAME_TAG] == "run-a" and run.data.tags["stage"] == "frame"
    assert len(run.data.params) == 151
    assert run.data.params["p042"] == "42"
    assert run.data.params["long"] == "x" * PARAM_VALUE_CHARS

    tracker.end()
    assert client.get_run(run_id).info.status == "FINISHED"

    resumed = RunTracker(mlflow_server.uri, experiment, "run-a")
    assert resumed.start(params, tags={"stage": "clip"}) == run_id
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["stage"] == "clip"
    assert len(client.search_runs([run.info.experiment_id])) == 1

    other = RunTracker(mlflow_server.uri, experiment, "run-b")
    assert other.start(params) != run_id


def test_resume_with_a_changed_param_names_the_key(mlflow_server: MlflowServer, experiment: str) -> None:
    run_id = RunTracker(mlflow_server.uri, experiment, "run").start({"lr": 1e-4, "hist.bins": 9, "train.log_every": 10})
    with pytest.raises(ValueError, match="'hist.bins'"):
        RunTracker(mlflow_server.uri, experiment, "run").start({"lr": 1e-4, "hist.bins": 10, "train.log_every": 10})
    # What a resume may change (logging cadence, post-training sections) passes and keeps the first value;
    # keys a newer julnet added are logged with their values.
    resumed = RunTracker(mlflow_server.uri, experiment, "run")
    assert resumed.start({"lr": 1e-4, "hist.bins": 9, "train.log_every": 50, "generate.crf": 18}) == run_id
    params = MlflowClient(mlflow_server.uri).get_run(run_id).data.params
    assert params["train.log_every"] == "10" and params["generate.crf"] == "18"


def test_metrics_round_trip_and_non_finite_values_are_skipped(
    mlflow_server: MlflowServer, experiment: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = RunTracker(mlflow_server.uri, experiment, "first")
    second = RunTracker(mlflow_server.uri, experiment, "second")  # two trackers in one process
    first.start({})
    second.start({})
    rows = [(step, {"loss": 1.0 / (step + 1), "lr": 1e-4}) for step in range(700)]  # 1400 points: two batches
    rows[5][1]["loss"] = math.nan
    rows[6][1]["loss"] = math.inf
    with caplog.at_level(logging.WARNING, logger="julnet.tracking"):
        first.log_metrics(rows)
    second.log_metrics([(3, {"loss": 7.0})])

    assert "loss" in caplog.text and "nan" in caplog.text
    history = MlflowClient(mlflow_server.uri).get_metric_history(first.run_id, "loss")
    expected = {step: 1.0 / (step + 1) for step in range(700) if step not in (5, 6)}
    assert {m.step: m.value for m in history} == pytest.approx(expected)
    assert len(history) == 698
    assert first.logged_steps("lr") == list(range(700))
    assert second.logged_steps("loss") == [3]


def test_image_and_artifacts_go_through_the_server(
    mlflow_server: MlflowServer, experiment: str, tmp_path: Path
) -> None:
    tracker = RunTracker(mlflow_server.uri, experiment, "images")
    tracker.start({})
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    tracker.log_image(image, "samples/step-00000010.png")
    tracker.log_dict({"step": 10}, "state/summary.json")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "a.txt").write_text("hello")
    tracker.log_artifacts(tmp_path / "report", "report")
    with pytest.raises(ValueError, match="HxWx3"):
        tracker.log_image(image[..., 0], "gray.png")

    client = MlflowClient(mlflow_server.uri)
    assert client.get_run(tracker.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    local = client.download_artifacts(tracker.run_id, "samples/step-00000010.png", str(tmp_path / "down"))
    decoded = cv2.cvtColor(cv2.imread(local), cv2.COLOR_BGR2RGB)
    assert decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)
    assert {a.path for a in client.list_artifacts(tracker.run_id)} == {"samples", "state", "report"}
    assert Path(client.download_artifacts(tracker.run_id, "report/a.txt", str(tmp_path / "d2"))).read_text() == "hello"


# --- embedded sqlite default ----------------------------------------------------------------------------------


def test_resolve_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri("http://config:5000") == "http://config:5000"
    assert resolve_tracking_uri(None) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert (tmp_path / "runs").is_dir()


def test_embedded_sqlite_default_tracks_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(None)
    tracker = RunTracker(uri, "julnet", "local")
    run_id = tracker.start({"lr": 0.001})
    tracker.log_metrics([(0, {"loss": 2.0}), (1, {"loss": 1.0, "bad": math.nan})])
    tracker.log_image(np.zeros((8, 8, 3), np.uint8), "grid.png")
    tracker.end("KILLED")

    resumed = RunTracker(uri, "julnet", "local")
    assert resumed.start({"lr": 0.001}) == run_id
    resumed.log_metrics([(2, {"loss": 0.5})])
    assert resumed.logged_steps("loss") == [0, 1, 2]
    assert resumed.logged_steps("bad") == []
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert list((tmp_path / "runs" / "artifacts").glob(f"{run_id}/artifacts/grid.png"))
    assert not (tmp_path / "mlruns").exists()
    with pytest.raises(RuntimeError, match="not been started"):
        RunTracker(uri, "julnet", "other").run_id
    with pytest.raises(ValueError, match="single quotes"):
        RunTracker(uri, "julnet", "it's")


# --- visualize ------------------------------------------------------------------------------------------------


def _batch(b: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 3, h, w, generator=g)
    source = target.clone()
    source[:, :, h // 2 :] = 0
    return {
        "source": source,
        "generated": torch.rand(b, 3, h, w, generator=g),
        "target": target,
        "log_sigma": torch.randn(b, 1, h, w, generator=g) - 3,
        "error_pred": torch.rand(b, 1, h, w, generator=g) * 0.3,
    }


@pytest.mark.parametrize(("h", "w", "factor"), [(104, 80, 2), (416, 320, 1)])
def test_sample_grid_layout(h: int, w: int, factor: int) -> None:
    batch = _batch(2, h, w)
    grid = sample_grid(**batch)
    tile_h, tile_w = h * factor, w * factor
    assert grid.dtype == np.uint8
    assert grid.shape == (HEADER_HEIGHT + 2 * tile_h, len(COLUMNS) * tile_w, 3)
    assert tile_w >= 160
    body = grid[HEADER_HEIGHT:]
    for column, name in enumerate(("source", "generated", "target")):
        expected = (batch[name].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        expected = np.concatenate(list(expected), axis=0).repeat(factor, 0).repeat(factor, 1)
        np.testing.assert_array_equal(body[:, column * tile_w : (column + 1) * tile_w], expected)
    assert grid[:HEADER_HEIGHT].max() == 255  # titles were drawn


def test_sample_grid_heat_maps() -> None:
    batch = _batch(6, 32, 32)
    batch["generated"] = batch["target"].clone()  # zero error
    batch["error_pred"] = torch.zeros_like(batch["error_pred"])
    grid = sample_grid(**batch, max_rows=3)
    tile = 32 * 5  # 32 px tiles are enlarged 5x to reach 160
    assert grid.shape == (HEADER_HEIGHT + 3 * tile, 6 * tile, 3)
    body = grid[HEADER_HEIGHT:]
    for column in (3, 4):
        heat = body[:, column * tile : (column + 1) * tile].reshape(-1, 3)
        assert (heat == heat[0]).all()
    sigma = body[:, 5 * tile :].reshape(-1, 3)
    assert len(np.unique(sigma, axis=0)) > 10  # σ has its own scale, so its variation shows


def test_loss_curves_draw_something() -> None:
    history = [{"step": s, "loss_g": 2.0 / (s + 1), "loss_d": 0.7 - 0.001 * s} for s in range(0, 200, 5)]
    history.append({"step": 200, "loss_g": math.nan})  # skipped, and loss_d is simply absent
    image = loss_curves(history, ["loss_g", "loss_d"])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert (image.min(axis=2) < 128).mean() > 0.01  # lines, ticks and titles on the white background


def test_write_png_round_trips_through_a_local_path(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    target = tmp_path / "out" / "grid.png"
    write_png(image, str(target))
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(target)), cv2.COLOR_BGR2RGB), image)
