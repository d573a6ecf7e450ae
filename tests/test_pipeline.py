"""The Kubeflow pipeline julnet-retrain: it compiles to the committed YAML, and it runs end to end with kfp's local
SubprocessRunner against the session's real local Ray cluster (127.0.0.1, token auth), the S3 test server and a real
`mlflow server`: new data -> a champion and a decision table; the same data again -> it ends at the first step.
A Ray job that fails makes its step, and the run, fail with the job's error line.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from julnet.registry import TAG_RAW_SHA
from pipelines.julnet_retrain import YAML, compile_pipeline
from tests.conftest import REPO
from tests.test_retrain import FAST, RUN, job_env, shared_bucket

STEPS = ["check-new-data", "preprocess", "pretrain-syncnet", "train", "evaluate", "register", "promote", "no-new-data"]


def test_the_committed_pipeline_yaml_is_current(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "julnet_retrain.yaml")
    assert fresh.read_text() == YAML.read_text(), "pipelines/julnet_retrain.yaml is stale: run python -m pipelines.julnet_retrain"


def test_the_pipeline_runs_its_steps_in_order_without_caching() -> None:
    spec, platform = yaml.safe_load_all(YAML.read_text())
    dag = spec["root"]["dag"]["tasks"]
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {
        "raw_uri", "dataset_uri", "config", "overrides", "ray_address", "rayjob_template", "mlflow_tracking_uri", "model_name",
        "promotion_overrides", "force"}
    tasks = {**dag, **{name: task for branch in spec["components"].values() for name, task in branch.get("dag", {}).get("tasks", {}).items()}}
    assert set(STEPS) <= set(tasks)
    after = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert {"train"} <= after["evaluate"] and {"train", "evaluate"} <= after["register"] and {"register"} <= after["promote"]
    assert all(tasks[step]["cachingOptions"] == {} for step in STEPS), "every step turns caching off (enableCache absent)"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    ray_token = [s for s in executors["exec-train"]["secretAsEnv"] if s["secretName"] == "julnet-ray-auth"]
    assert ray_token and ray_token[0]["keyToEnv"] == [{"secretKey": "auth_token", "envVar": "RAY_AUTH_TOKEN"}]


@pytest.fixture(scope="module")
def local_kfp(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Path:
    """kfp's local runner in this environment (no venv per step); steps import pipelines from the checkout."""
    from kfp import local

    monkeypatch_module.setenv("PYTHONPATH", str(REPO))
    root = tmp_path_factory.mktemp("kfp")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def run_pipeline(ray_cluster, mlflow_server, bucket: str, model: str, overrides: list[str] = FAST, force: bool = False) -> dict:
    """Run julnet-retrain locally on the session's services; its outputs."""
    from pipelines.julnet_retrain import julnet_retrain

    task = julnet_retrain(
        raw_uri=f"{bucket}/raw", dataset_uri=f"{bucket}/data", storage_uri=f"{bucket}/runs", run_name=RUN, config="tiny",
        overrides=overrides, model_name=model, mlflow_tracking_uri=mlflow_server.uri, ray_address=ray_cluster.dashboard,
        ray_runtime_env={"working_dir": str(REPO), "env_vars": {"PATH": job_env(mlflow_server.uri)["PATH"]}}, force=force,
    )
    return task.outputs


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # kfp warns that the image's name does not say "python"
def test_the_pipeline_trains_registers_and_promotes_then_stops_for_no_new_data(local_kfp, ray_cluster, s3_server, mlflow_server) -> None:
    bucket, model = shared_bucket(s3_server), f"pipe-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    outputs = run_pipeline(ray_cluster, mlflow_server, bucket, model)
    took = time.monotonic() - started
    print(f"julnet-retrain, local runner: {took:.0f} s for the whole chain")
    assert outputs["status"] == "promoted", outputs
    decision = outputs["decision"]
    assert f"## models:/{model}/1: PROMOTED" in decision and "**Reason:** no champion yet" in decision
    assert "| psnr_mouth | primary | " in decision and "| metric | challenger | champion | better |" in decision

    client = MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri)
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.version == "1" and len(champion.tags[TAG_RAW_SHA]) == 64
    assert json.loads(champion.tags["julnet.promotion"])["promoted"] is True
    reports = sorted(local_kfp.rglob("report"))
    assert any("PROMOTED" in r.read_text() for r in reports if r.is_file()), "the promote step's Markdown visualization"

    started = time.monotonic()
    again = run_pipeline(ray_cluster, mlflow_server, bucket, model)
    print(f"julnet-retrain on the same data: {time.monotonic() - started:.0f} s")
    assert again["status"] == "no_new_data"
    assert f"no new data: the 3 files under {bucket}/raw" in again["decision"] and f"champion models:/{model}/1" in again["decision"]
    assert len(client.search_model_versions(f"name='{model}'")) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_failing_ray_job_fails_its_step_with_the_jobs_error(local_kfp, ray_cluster, s3_grid, mlflow_server, capfd) -> None:
    """The train step alone (KFP runs a component like a one-step pipeline), on the session's GRID dataset in S3, with a
    config only the training job rejects (its pretrained weights): the job fails, so the step fails with its error."""
    from pipelines.julnet_retrain import train
    from pipelines.target import RayTarget
    from pipelines.steps import Context
    from julnet.retrain import Plan

    plan = Plan(s3_grid.rsplit("/", 1)[0], s3_grid.rsplit("/", 1)[0], f"{s3_grid.rsplit('/', 2)[0]}/runs", "broken", "tiny",
                (*FAST, "perceptual.vgg_width=1", "perceptual.vgg.allow_random_init=false"))
    target = RayTarget(ray_cluster.dashboard, runtime_env={"working_dir": str(REPO), "env_vars": {"PATH": job_env(mlflow_server.uri)["PATH"]}})
    context = Context(plan, target, mlflow_server.uri, "broken-0", {"new": True, "reason": "", "raw": "", "fingerprint": "", "files": 0, "champion": ""})
    with pytest.raises(RuntimeError, match="finished with status .*FAILURE"):
        train(context=context.to_dict(), manifest=s3_grid, syncnet_model="")
    out = capfd.readouterr().out
    assert "JobFailed: Ray job julnet-train-" in out and "FAILED: julnet train: error: VGG-19 weights are not configured" in out
