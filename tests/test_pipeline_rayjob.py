"""The pipeline's `rayjob` backend without a Kubernetes cluster: the RayJob it builds from the template the overlays
deploy validates against the KubeRay v1.7.0 CRD schema, and its small wait reacts to the statuses KubeRay reports
(a stand-in for the Kubernetes API answers them)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from pipelines import rayjob
from pipelines.target import JobFailed, RayTarget, job_runtime_env
from tests.test_infra import one, problems, rendered

ENTRYPOINT = "python -m julnet train --config paper --data s3://data/x/manifest.json --storage s3://runs --name nightly-0123"


def deployed_template(overlay: str = "prod") -> dict[str, Any]:
    """The RayJob julnet-retrain as the API server returns it: what the overlay rendered, plus server fields."""
    template = copy.deepcopy(one(rendered(overlay), "RayJob"))
    template["metadata"].update(uid="0f1e", resourceVersion="42", annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"})
    template["status"] = {"jobDeploymentStatus": "Suspended"}
    return template


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_rayjob_for_a_step_is_the_template_with_the_steps_command_and_validates(overlay: str) -> None:
    template = deployed_template(overlay)
    runtime_env = job_runtime_env(RayTarget(backend="rayjob", rayjob_template="julnet-retrain"), {"MLFLOW_TRACKING_URI": "http://julnet-mlflow:5000"})
    job = rayjob.build_rayjob(template, "julnet-train-1a2b3c4d", ENTRYPOINT, runtime_env, num_gpus=0)
    assert problems(job) == []
    spec = job["spec"]
    assert job["metadata"] == {"name": "julnet-train-1a2b3c4d", "labels": template["metadata"]["labels"]} and "status" not in job
    assert spec["suspend"] is False and spec["jobId"] == "julnet-train-1a2b3c4d" and spec["entrypoint"] == ENTRYPOINT
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"MLFLOW_TRACKING_URI": "http://julnet-mlflow:5000"}}
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= rayjob.KEEP_FINISHED_S
    assert spec["rayClusterSpec"] == template["spec"]["rayClusterSpec"] and "entrypointNumGpus" not in spec
    gpu = rayjob.build_rayjob(template, "julnet-promote-5e6f7a8b", ENTRYPOINT, runtime_env, num_gpus=1)
    assert gpu["spec"]["entrypointNumGpus"] == 1 and problems(gpu) == []
    assert template["spec"]["suspend"] is True, "the template itself is left as it was"


class FakeKubernetes:
    """Answers the CustomObjectsApi calls start_rayjob makes; its RayJob's status walks through `statuses`."""

    def __init__(self, template: dict[str, Any], statuses: list[dict[str, Any]]) -> None:
        self.template, self.statuses, self.created = template, iter(statuses), []

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        assert (group, version, plural, name) == ("ray.io", "v1", "rayjobs", "julnet-retrain")
        return self.template

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]) -> None:
        self.created.append((namespace, body))

    def get_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        return {"status": next(self.statuses)}


@pytest.fixture
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rayjob, "POLL_S", 0.0)
    yield


def test_start_rayjob_creates_it_and_waits_for_its_dashboard(no_waiting) -> None:
    api = FakeKubernetes(deployed_template(), [{}, {"jobDeploymentStatus": "Initializing"},
                                               {"jobDeploymentStatus": "Running", "jobStatus": "PENDING", "dashboardURL": "j-head-svc.julnet.svc:8265"}])
    target = RayTarget(backend="rayjob", rayjob_template="julnet-retrain", namespace="julnet")
    assert rayjob.start_rayjob(target, "julnet-train-1a2b3c4d", ENTRYPOINT, {}, api=api) == "http://j-head-svc.julnet.svc:8265"
    ((namespace, body),) = api.created
    assert namespace == "julnet" and body["metadata"]["name"] == "julnet-train-1a2b3c4d" and problems(body) == []


def test_a_rayjob_that_fails_before_its_job_runs_fails_the_step(no_waiting) -> None:
    api = FakeKubernetes(deployed_template(), [{"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "cluster not ready in 600 s"}])
    with pytest.raises(JobFailed, match="RayJob julnet/julnet-train-1 failed before its job ran: DeadlineExceeded cluster not ready in 600 s"):
        rayjob.start_rayjob(RayTarget(backend="rayjob", rayjob_template="julnet-retrain", namespace="julnet"), "julnet-train-1", ENTRYPOINT, {}, api=api)


def test_templates_from_a_file_and_bad_targets_are_one_line_errors(tmp_path) -> None:
    path = tmp_path / "rayjob.yaml"
    path.write_text(yaml.safe_dump(deployed_template()))
    assert rayjob.load_template(str(path))["kind"] == "RayJob"
    path.write_text("kind: RayCluster\nspec: {}\n")
    with pytest.raises(ValueError, match="is not a RayJob manifest"):
        rayjob.load_template(str(path))
    with pytest.raises(ValueError, match="ray backend must be one of"):
        RayTarget(address="http://x:8265", backend="kuberay")
    with pytest.raises(ValueError, match="needs the cluster's dashboard address"):
        RayTarget()
    with pytest.raises(ValueError, match="needs a RayJob template"):
        RayTarget(backend="rayjob")
