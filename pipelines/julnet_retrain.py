"""The Kubeflow pipeline `julnet-retrain` (KFP v2): check for new data -> preprocess -> (SyncNet) -> train -> evaluate
-> register -> promote, the heavy steps as Ray jobs. Compile it (the committed YAML must match):

    python -m pipelines.julnet_retrain                      # writes pipelines/julnet_retrain.yaml
    python -m pipelines.julnet_retrain --image registry.example.com/julnet:0.1.0 --out my.yaml

Every component is a thin call into pipelines.steps, run in the julnet image (the project, kfp and the kubernetes
client installed), so nothing is pip-installed when a step starts. Caching is off: each step has side effects.
No `from __future__ import annotations` here: KFP reads the components' type hints at import time.
"""

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes

from julnet.config import DEFAULT_CONFIG
from kfp.dsl import Markdown, Output

IMAGE = "ghcr.io/julnet/julnet:0.1.0"
YAML = Path(__file__).with_name("julnet_retrain.yaml")

# The Secrets the pipeline's pods read, as docs/operations.md creates them, and ConfigMap julnet-env, which the
# overlays generate (tests/test_wiring.py checks both ends). (name, {key: variable}, optional): the S3 keys are absent
# where the pods have a cloud identity (their service account), the S3 endpoint where they use AWS itself (prod).
RAY_AUTH_SECRET = ("julnet-ray-auth", {"auth_token": "RAY_AUTH_TOKEN"}, False)
MLFLOW_SECRET = ("julnet-mlflow-client", {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}, False)
S3_SECRET = ("julnet-s3", {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}, True)
ENV_CONFIG = ("julnet-env", {"AWS_REGION": "AWS_REGION"}, False)
S3_ENDPOINT_CONFIG = ("julnet-env", {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}, True)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_new_data(
    raw_uri: str, dataset_uri: str, storage_uri: str, run_name: str, config: str, overrides: list, promotion_overrides: list,
    model_name: str, syncnet_steps: int, eval_gpus: float, mlflow_tracking_uri: str, ray_address: str, ray_backend: str,
    rayjob_template: str, ray_runtime_env: dict, force: bool,
) -> NamedTuple("Outputs", proceed=bool, reason=str, context=dict):
    """Compare the raw prefix with the data the champion was trained on; validate the settings for the next steps."""
    from collections import namedtuple

    from julnet.retrain import Plan
    from pipelines.steps import check
    from pipelines.target import RayTarget

    policy = [*promotion_overrides, *([f"promotion.model_name={model_name}"] if model_name else [])]
    plan = Plan(raw_uri, dataset_uri, storage_uri, run_name, config, tuple(overrides), tuple(policy), syncnet_steps, eval_gpus)
    target = RayTarget(ray_address, ray_backend, rayjob_template, "", ray_runtime_env)
    return namedtuple("Outputs", "proceed reason context")(*check(plan, target, mlflow_tracking_uri, force))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(context: dict) -> str:
    """Raw videos to training shards (`julnet preprocess --ray` as a Ray job); returns the manifest URI."""
    from pipelines import steps

    return steps.preprocess(context)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pretrain_syncnet(context: dict, manifest: str) -> str:
    """Pre-train the SyncNet when syncnet_steps > 0 (`julnet train-syncnet --name`); returns its models:/ URI or ""."""
    from pipelines import steps

    return steps.syncnet(context, manifest)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(context: dict, manifest: str, syncnet_model: str) -> str:
    """Train on Ray (`julnet train --name`, resumed by run name); returns the MLflow run id."""
    from pipelines import steps

    return steps.train(context, manifest, syncnet_model)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(context: dict, run_id: str, report: Output[Markdown]) -> str:
    """Evaluate the model on the held-out split (`julnet evaluate --ray`); returns the result's URI, shows the metrics."""
    from pipelines import steps

    uri, table = steps.evaluate(context, run_id)
    with open(report.path, "w") as f:
        f.write(table)
    return uri


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(context: dict, run_id: str) -> str:
    """Register the run's model with its lineage as @challenger; returns the version."""
    from pipelines import steps

    return steps.register_model(context, run_id)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(context: dict, version: str, report: Output[Markdown]) -> NamedTuple("Outputs", promoted=bool, status=str, decision=str):
    """Challenger against champion (`julnet promote` as a Ray job); the decision as outputs and as a Markdown table."""
    from collections import namedtuple

    from pipelines import steps

    promoted, status, decision = steps.promote(context, version)
    with open(report.path, "w") as f:
        f.write(decision)
    return namedtuple("Outputs", "promoted status decision")(promoted, status, decision)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def no_new_data(reason: str, report: Output[Markdown]) -> NamedTuple("Outputs", status=str, decision=str):
    """The early end: nothing new to train on; the reason as the decision."""
    from collections import namedtuple

    from pipelines import steps

    decision = steps.no_new_data(reason)
    with open(report.path, "w") as f:
        f.write(decision)
    return namedtuple("Outputs", "status decision")("no_new_data", decision)


def _pod_settings(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """No caching (every step has side effects), the Ray token, MLflow and S3 credentials from Secrets, S3 settings from julnet-env."""
    task.set_caching_options(False)
    task.set_env_variable("RAY_AUTH_MODE", "token")
    for name, keys, optional in (RAY_AUTH_SECRET, MLFLOW_SECRET, S3_SECRET):
        kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=keys, optional=optional)
    for name, keys, optional in (ENV_CONFIG, S3_ENDPOINT_CONFIG):
        kubernetes.use_config_map_as_env(task, config_map_name=name, config_map_key_to_env=keys, optional=optional)
    return task


@dsl.pipeline(name="julnet-retrain", description="Scheduled retraining of JULNet: new data -> train on Ray -> evaluate -> register -> promote")
def julnet_retrain(
    raw_uri: str,
    dataset_uri: str,
    storage_uri: str,
    run_name: str = "retrain",
    config: str = DEFAULT_CONFIG,
    overrides: list = [],
    promotion_overrides: list = [],
    model_name: str = "julnet",
    syncnet_steps: int = 0,
    eval_gpus: float = 0.0,
    mlflow_tracking_uri: str = "http://julnet-mlflow:5000",
    ray_address: str = "http://julnet-ray-head-svc:8265",
    ray_backend: str = "cluster",
    rayjob_template: str = "julnet-retrain",
    ray_runtime_env: dict = {},
    force: bool = False,
) -> NamedTuple("Outputs", status=str, decision=str):
    """The whole retraining; `status` is promoted, not_promoted or no_new_data, `decision` the Markdown report."""
    checked = _pod_settings(check_new_data(
        raw_uri=raw_uri, dataset_uri=dataset_uri, storage_uri=storage_uri, run_name=run_name, config=config, overrides=overrides,
        promotion_overrides=promotion_overrides, model_name=model_name, syncnet_steps=syncnet_steps, eval_gpus=eval_gpus,
        mlflow_tracking_uri=mlflow_tracking_uri, ray_address=ray_address, ray_backend=ray_backend, rayjob_template=rayjob_template,
        ray_runtime_env=ray_runtime_env, force=force,
    ))
    context = checked.outputs["context"]
    with dsl.If(checked.outputs["proceed"] == True, name="new-data"):  # noqa: E712 (a KFP condition, not a Python test)
        data = _pod_settings(preprocess(context=context))
        sync = _pod_settings(pretrain_syncnet(context=context, manifest=data.output))
        trained = _pod_settings(train(context=context, manifest=data.output, syncnet_model=sync.output))
        evaluated = _pod_settings(evaluate(context=context, run_id=trained.output))
        registered = _pod_settings(register(context=context, run_id=trained.output).after(evaluated))
        promoted = _pod_settings(promote(context=context, version=registered.output))
    with dsl.Else(name="no-new-data"):
        skipped = _pod_settings(no_new_data(reason=checked.outputs["reason"]))
    outputs = NamedTuple("Outputs", status=str, decision=str)
    return outputs(dsl.OneOf(promoted.outputs["status"], skipped.outputs["status"]),
                   dsl.OneOf(promoted.outputs["decision"], skipped.outputs["decision"]))


def compile_pipeline(path: Path = YAML, image: str = IMAGE) -> Path:
    """Write the pipeline's IR YAML, with `image` as every component's image."""
    compiler.Compiler().compile(julnet_retrain, str(path))
    if image != IMAGE:
        path.write_text(path.read_text().replace(f"image: {IMAGE}\n", f"image: {image}\n"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=YAML, help="where to write the compiled pipeline")
    parser.add_argument("--image", default=IMAGE, help="the julnet image every step runs in")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.out, args.image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
