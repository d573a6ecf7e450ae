"""infra/: the manifests parse, both overlays render with `kubectl kustomize`, and what they render validates.

No Kubernetes API server exists here, so validation is offline: KubeRay resources against the KubeRay v1.7.0 CRD
schemas in infra/crds (strictly: a field the schema does not name fails, as `kubectl apply --validate=strict` would),
core resources against Kubernetes 1.32's schemas (kubernetes-validate, strict). CEL rules (x-kubernetes-validations)
are not evaluated. Then what the overlays promise: one Ray version, one cluster shape, no credentials, authentication
in front of Ray, MLflow and MinIO, GPUs in prod. The Dockerfile cannot be built here (no Docker engine): it is linted.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

INFRA = REPO / "infra"
CRDS = INFRA / "crds" / "kuberay-v1.7.0"
OVERLAYS = ("dev", "prod")
KUBERNETES = "1.32.0"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
USERINFO = re.compile(r"://[^/\s:@]+:[^/\s@]+@")  # a password inside a URI
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are 3 MB of YAML


def kustomize(path: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize` renders for a kustomization folder."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize) is not on PATH: the machine image provides it")
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr[-3000:]}"
    return [doc for doc in yaml.load_all(proc.stdout, Loader=LOADER) if doc]


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(INFRA / "overlays" / overlay))


def one(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _closed(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever it names the fields and does not say to keep unknown ones."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _closed(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    """kind -> a strict validator for the served `v1` schema of each copied KubeRay CRD."""
    validators = {}
    for path in sorted(CRDS.glob("ray.io_*.yaml")):
        crd = yaml.load(path.read_text(), Loader=LOADER)
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = _closed(v1["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"type": "object"}  # metadata is checked by the API server, not the CRD
        validators[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    return validators


def problems(doc: dict[str, Any]) -> list[str]:
    """Why a rendered resource is invalid (empty if it is valid)."""
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if doc.get("apiVersion", "").startswith("ray.io/"):
        validator = crd_validators().get(doc["kind"])
        if validator is None:
            return [f"{where}: no CRD copied for {doc['kind']}"]
        return [f"{where} {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where} {'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec inside a resource (Deployments, Jobs, and each group of each Ray cluster)."""
    specs = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "containers" in node and isinstance(node["containers"], list):
                specs.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc.get("spec", {}))
    return specs


def ray_cluster_specs(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """The cluster spec of the RayCluster, the RayJob and the RayCronJob."""
    return {
        "RayCluster": one(docs, "RayCluster")["spec"],
        "RayJob": one(docs, "RayJob")["spec"]["rayClusterSpec"],
        "RayCronJob": one(docs, "RayCronJob")["spec"]["jobTemplate"]["rayClusterSpec"],
    }


def test_every_manifest_in_infra_parses() -> None:
    files = sorted(INFRA.rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        assert list(yaml.load_all(path.read_text(), Loader=LOADER)), f"{path} is empty"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_renders_and_every_resource_validates(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"RayCluster", "RayJob", "RayCronJob", "Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    assert [p for doc in docs for p in problems(doc)] == []


def test_the_validators_reject_unknown_fields_and_wrong_types() -> None:
    cluster = copy.deepcopy(one(rendered("dev"), "RayCluster"))
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert any("maxReplica" in p for p in problems(cluster))
    cluster = copy.deepcopy(one(rendered("dev"), "RayCluster"))
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 7
    assert problems(cluster)
    deployment = copy.deepcopy(one(rendered("dev"), "Deployment", "julnet-mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["enviroment"] = []
    assert problems(deployment)


def test_ray_version_is_the_one_the_project_installs() -> None:
    installed = importlib.metadata.version("ray")
    pinned = re.search(r"^ray==(\S+)$", (REPO / "constraints" / "cpu.txt").read_text(), re.MULTILINE)
    assert pinned and pinned.group(1) == installed
    for overlay in OVERLAYS:
        versions = {kind: spec["rayVersion"] for kind, spec in ray_cluster_specs(rendered(overlay)).items()}
        assert set(versions.values()) == {installed}, versions
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "-c constraints/cpu.txt ." in dockerfile, "the image must install Ray (and torch) at the tested pins"
    for name, version in re.findall(r"\s([A-Za-z][\w-]*)==([\w.]+)", dockerfile):
        if name in ("kfp", "kfp-kubernetes"):
            assert importlib.metadata.version(name) == version, f"the image pins {name}=={version}; tests use another"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_cluster_has_one_shape_and_every_container_an_image(overlay: str) -> None:
    docs = rendered(overlay)
    specs = ray_cluster_specs(docs)
    assert specs["RayJob"] == specs["RayCluster"] == specs["RayCronJob"]
    job, cron = one(docs, "RayJob")["spec"], one(docs, "RayCronJob")["spec"]
    assert job["suspend"] is True and "ray_jobs.retrain" in job["entrypoint"]
    assert cron["jobTemplate"]["entrypoint"] == job["entrypoint"] and not cron["jobTemplate"].get("suspend")
    for doc in docs:
        for spec in pod_specs(doc):
            assert all(c.get("image") for c in spec["containers"]), f"{doc['kind']}/{doc['metadata']['name']}: a container has no image"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_credentials_are_written_into_the_manifests(overlay: str) -> None:
    docs = rendered(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created by the operator, never rendered from the repo"
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for key, value in (doc.get("data") or {}).items():
            assert not SECRET_NAME.search(key) and not USERINFO.search(str(value)), f"{where}: {key} looks like a credential"
        for spec in pod_specs(doc):
            for container in spec["containers"]:
                for env in container.get("env", []):
                    literal = env.get("value")
                    assert literal is None or not (SECRET_NAME.search(env["name"]) or USERINFO.search(literal)), f"{where}: {env['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_mlflow_and_minio_require_authentication(overlay: str) -> None:
    docs = rendered(overlay)
    for kind, spec in ray_cluster_specs(docs).items():
        assert spec["authOptions"] == {"mode": "token", "secretName": "julnet-ray-auth"}, kind
    mlflow = one(docs, "Deployment", "julnet-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name" in mlflow["command"] and mlflow["command"][mlflow["command"].index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in mlflow["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "julnet-mlflow-admin"
    minio = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "julnet-minio"]
    if overlay == "prod":
        assert not minio
        return
    minio_env = {e["name"]: e for e in minio[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert minio_env[name]["valueFrom"]["secretKeyRef"]["name"] == "julnet-minio"


def test_dev_is_one_small_cpu_node_with_sqlite_mlflow_and_minio() -> None:
    docs = rendered("dev")
    (workers,) = one(docs, "RayCluster")["spec"]["workerGroupSpecs"]
    assert workers["maxReplicas"] == 1 and "nvidia.com/gpu" not in str(workers)
    mlflow = one(docs, "Deployment", "julnet-mlflow")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in mlflow["containers"][0]["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("sqlite:////mlflow/")
    assert {"name": "store", "persistentVolumeClaim": {"claimName": "julnet-mlflow"}} in mlflow["volumes"]
    config = one(docs, "ConfigMap", "julnet-env")["data"]
    assert config["AWS_ENDPOINT_URL"] == "http://julnet-minio:9000"
    assert "--config tiny" in one(docs, "RayJob")["spec"]["entrypoint"]


def test_prod_has_autoscaling_gpu_workers_postgres_mlflow_and_external_s3() -> None:
    docs = rendered("prod")
    cluster = one(docs, "RayCluster")["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert 0 <= gpu["minReplicas"] <= gpu["maxReplicas"] and gpu["maxReplicas"] >= 4
    resources = gpu["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    mlflow = one(docs, "Deployment", "julnet-mlflow")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in mlflow["containers"][0]["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"] == {"name": "MLFLOW_BACKEND_STORE_URI", "valueFrom": {"secretKeyRef": {"name": "julnet-mlflow-db", "key": "uri"}}}
    assert {"name": "auth", "secret": {"secretName": "julnet-mlflow-auth-config"}} in mlflow["volumes"]
    assert "AWS_ENDPOINT_URL" not in one(docs, "ConfigMap", "julnet-env")["data"]
    job = one(docs, "RayJob")["spec"]
    assert job["entrypointNumGpus"] == 1 and "--eval-gpus 1" in job["entrypoint"]
    assert one(docs, "RayCronJob")["spec"]["jobTemplate"]["entrypointNumGpus"] == 1


def test_the_cloud_identity_option_annotates_the_workloads_service_account(tmp_path: Path) -> None:
    shutil.copy(INFRA / "overlays" / "prod" / "cloud-identity.yaml", tmp_path / "cloud-identity.yaml")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(INFRA / "overlays" / "prod", tmp_path)],
        "patches": [{"path": "cloud-identity.yaml"}],
    }))
    account = one(kustomize(tmp_path), "ServiceAccount", "julnet")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    for doc in (one(rendered("prod"), "RayCluster"), one(rendered("prod"), "Deployment", "julnet-mlflow")):
        assert {spec["serviceAccountName"] for spec in pod_specs(doc)} == {"julnet"}


def test_the_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), str(INFRA / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
