"""Distributed training on a real local Ray cluster: job submission, worker failure, resume by name, NaN."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from julnet import storage
from julnet.config import load_config
from julnet.models.checkpoint import load_checkpoint, locate_checkpoint
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SHORT = ["--set", "train.log_every=1", "--set", "train.checkpoint_every=3", "--set", "tracking.image_every=3"]


def _submit(cluster, args: list[str], env: dict[str, str] | None = None, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--working-dir", str(REPO)]
    if env:
        cmd += ["--runtime-env-json", json.dumps({"env_vars": env})]
    cmd += ["--", sys.executable, "ray_jobs/train.py", *args]
    if wait:
        return subprocess.run(cmd, env=cluster.env(), capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _train_args(data: str, runs: str, name: str, steps: int, mlflow_uri: str) -> list[str]:
    return [
        "--config", "tiny", "--data", data, "--storage", runs, "--name", name, "--stages", "frame",
        "--set", f"train.stages.0.steps={steps}", "--set", f"tracking.uri={mlflow_uri}", *SHORT,
    ]


def _run(client: MlflowClient, name: str):
    (run,) = client.search_runs(client.get_experiment_by_name("julnet").experiment_id, f"tags.`julnet.run_name` = '{name}'")
    return run


def _steps(client: MlflowClient, run_id: str, key: str = "total") -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_ray_job_submit_trains_from_s3_survives_a_killed_worker_and_tracks_in_mlflow(ray_cluster, s3_grid, s3_server, mlflow_server):
    """One job carries the checks (each Ray job costs a minute here): data and checkpoints on S3, everything tracked in
    MLflow, both stages in one worker group (the clip stage starts from the frame stage's weights in memory), rank 1
    killed at step 5 of each stage so the group restarts from the step-3 checkpoint of that stage, and Ray's pruning
    keeping the frame stage's final checkpoint and the last `train.keep_last` of the clip stage."""
    runs = s3_server.make_bucket()
    args = _train_args(s3_grid, runs, "job1", 6, mlflow_server.uri)
    args[args.index("frame")] = "frame,clip"
    args += ["--set", "train.stages.1.steps=5", "--set", "train.keep_last=1"]
    proc = _submit(ray_cluster, args, env={"JULNET_FAULT_AT_STEP": "1:5"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert storage.exists(f"{runs}/job1/frame/FAULT-1-5") and storage.exists(f"{runs}/job1/clip/FAULT-1-5"), "the drill killed rank 1 twice"
    assert "clip starts from the weights frame ended with" in out, out[-4000:]
    kept = {uri.rsplit("/", 3)[-3] + "/" + uri.rsplit("/", 2)[-2] for uri in storage.list_files(f"{runs}/job1", suffixes="state.pt")}
    # frame/step-6 kept although the oldest with keep_last=1: a stage's final outranks the rest; clip/step-3 pruned. A
    # step-3 checkpoint Ray never registered (rank 1 died before the controller polled that report) stays, unpruned.
    orphans = {"frame/step-00000003", "clip/step-00000003"}
    assert {"frame/step-00000006", "clip/step-00000005"} <= kept <= {"frame/step-00000006", "clip/step-00000005", *orphans}, kept
    client = MlflowClient(mlflow_server.uri)
    run = _run(client, "job1")
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.pe"] == "10.0" and run.data.params["hist.bins"] == "11"
    assert _steps(client, run.info.run_id) == list(range(1, 12)), "the run completed, and no step was recorded twice"
    resumed = client.get_metric_history(run.info.run_id, "resumed_from_step")
    assert [(m.step, m.value) for m in resumed] == [(4, 3.0), (10, 3.0)], "the step after each restart is the checkpoint's + 1"
    assert run.data.metrics["lambda_pe"] == 10.0 and run.data.metrics["lambda_sync"] == 0.1
    for key in ("un1", "un2", "pe", "ad_g", "ad_d", "lr", "samples_per_s", "cpu_max_rss_mb", "lambda_pe"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples", "model", "loss_curves.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "samples/frame")} == {
        "samples/frame/step-00000003.png", "samples/frame/step-00000006.png"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "samples/clip")} == {"samples/clip/step-00000003.png"}
    local = Path(client.download_artifacts(run.info.run_id, "model"))
    assert (local / "MLmodel").is_file(), "the model is an MLflow (pyfunc) model"
    state = load_checkpoint(locate_checkpoint(local))
    assert (state["stage"], state["step"]) == ("clip", 5)
    assert all(torch.isfinite(v).all() for v in state["models"]["generator"].values() if v.is_floating_point())


def _job_id(proc: subprocess.Popen) -> str:
    for line in proc.stdout:
        if "raysubmit_" in line:
            return next(word.strip("'\".,") for word in line.split() if "raysubmit_" in word)
    raise AssertionError("no job id in ray job submit output")


def _wait_for_free_cpus(ray, cpus: float, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(1)
    assert ray.available_resources().get("CPU", 0) >= cpus, f"resources still held: {ray.available_resources()}"


def test_a_run_stopped_by_a_non_finite_loss_or_by_ray_job_stop_resumes_when_resubmitted(ray_cluster, ray_local, s3_grid, tmp_path, mlflow_server):
    """One run, three submissions of the same name (each Ray job costs a minute here): a NaN at step 3 stops every rank
    and keeps the last good checkpoint; the next submission goes on from it until `ray job stop`; the third finishes."""
    import ray

    args = _train_args(s3_grid, str(tmp_path / "runs"), "again", 9, mlflow_server.uri) + ["--set", "train.checkpoint_every=1"]
    proc = _submit(ray_cluster, args, env={"JULNET_FAULT_AT_STEP": "1:3:nan"})
    assert proc.returncode != 0
    assert "non-finite" in proc.stdout + proc.stderr and "last good checkpoint is kept" in proc.stdout + proc.stderr
    stage = tmp_path / "runs" / "again" / "frame"
    assert json.loads((stage / "NONFINITE.json").read_text())["step"] == 3, "every rank stopped at the poisoned step"
    good = sorted(p.name for p in stage.glob("step-*"))
    assert good[-1] == "step-00000002", "the last checkpoint is the last good step"
    state = load_checkpoint(stage / good[-1])
    assert all(torch.isfinite(v).all() for v in state["models"]["generator"].values() if v.is_floating_point())
    client = MlflowClient(mlflow_server.uri)
    assert _run(client, "again").info.status == "FAILED"

    second = _submit(ray_cluster, args, wait=False)  # without the fault: it goes on from step 2 ...
    job_id = _job_id(second)
    checkpoint = stage / "step-00000003" / "state.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert checkpoint.exists()
    subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "stop", job_id], env=ray_cluster.env(), capture_output=True, timeout=120)
    out, _ = second.communicate(timeout=120)  # ... until stopped
    assert "stopped on a non-finite loss before" in out and not (stage / "NONFINITE.json").exists(), out[-4000:]
    _wait_for_free_cpus(ray, 2.0)

    third = _submit(ray_cluster, args)
    assert third.returncode == 0, third.stdout[-4000:] + third.stderr[-2000:]
    assert "resumed frame at step" in third.stdout + third.stderr
    assert load_checkpoint(stage / "step-00000009")["step"] == 9
    run = _run(client, "again")
    assert run.info.status == "FINISHED"
    steps = _steps(client, run.info.run_id)
    assert steps == sorted(set(steps)) and steps[-1] == 9, "no step recorded twice"
    resumed = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "resumed_from_step")]
    assert resumed[0] == (3, 2.0), "the step after the last good checkpoint"
    assert len(resumed) == 2 and resumed[1][0] == resumed[1][1] + 1 and resumed[1][1] >= 3, resumed


def test_the_training_workers_module_loads_without_mlflow_or_matplotlib():
    """Each Ray Train worker and Ray Data's actors unpickle functions of julnet.training.distributed: importing it must
    not pull in MLflow or matplotlib (1.5-2.5 s of CPU per process), which only rank 0 and the driver use."""
    code = "import sys, julnet.training.distributed; print(sorted(m for m in ('mlflow', 'matplotlib') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_bad_config_or_missing_data_fails_before_ray_starts(tmp_path):
    from ray_jobs.train import main

    assert main(["--config", "tiny", "--data", str(tmp_path / "nope.json"), "--storage", str(tmp_path), "--name", "x"]) == 2
    assert main(["--config", "tiny", "--data", "x", "--storage", str(tmp_path), "--name", "x", "--set", "hist.bins=1"]) == 2
    assert not (tmp_path / "x").exists()


def test_syncnet_job_registers_weights_that_configs_load_by_uri(ray_local, grid_dataset, mlflow_server, tmp_path, monkeypatch):
    from julnet.config import PretrainedWeights
    from julnet.models.syncnet import SyncNet
    from julnet.pretrained import load_into
    from julnet.registry import pretrain_and_register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("JULNET_CACHE", str(tmp_path / "cache"))
    cfg = load_config("tiny", [f"tracking.uri={mlflow_server.uri}", "train.log_every=2"])
    result = pretrain_and_register(cfg, grid_dataset, "syncnet-test", 4, "julnet-syncnet-test")
    assert result["model"].startswith("models:/julnet-syncnet-test/") and 0 <= result["sync_accuracy"] <= 1
    client = MlflowClient(mlflow_server.uri)
    version = client.get_model_version("julnet-syncnet-test", result["model"].rsplit("/", 1)[-1])
    assert version.run_id == result["run_id"] and "heldout_sync_accuracy" in version.tags
    assert "heldout_sync_accuracy" in client.get_run(result["run_id"]).data.metrics
    net = load_into(SyncNet(cfg), PretrainedWeights(path=result["model"]), "SyncNet", "syncnet.weights")
    saved = torch.load(client.download_artifacts(result["run_id"], "syncnet/syncnet.pt", str(tmp_path)), weights_only=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in saved.items()), "the registered version's weights"


def test_a_job_with_nowhere_durable_to_log_or_store_refuses_before_training(ray_cluster, s3_grid, s3_bucket, tmp_path):
    """Submitted with --working-dir, a job runs in a temporary copy: a tracking database or storage there would be
    lost when the job ends, so the job says so and exits before any worker starts."""
    base = ["--config", "tiny", "--data", s3_grid, "--name", "nowhere"]
    no_tracking = _submit(ray_cluster, [*base, "--storage", s3_bucket])
    out = no_tracking.stdout + no_tracking.stderr
    assert no_tracking.returncode != 0 and "tracking: sqlite:///" in out and "would be lost when the job ends" in out, out[-3000:]
    local_storage = _submit(ray_cluster, [*base, "--storage", "runs", "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    out = local_storage.stdout + local_storage.stderr
    assert local_storage.returncode != 0 and "storage: runs is inside this Ray job's temporary working directory" in out, out[-3000:]
    assert "TorchTrainer" not in out and not (tmp_path / "mlflow.db").exists()
