"""The `rayjob` backend: one KubeRay RayJob per step, made from a template, then followed like any Ray job.

The template is a RayJob: by default the suspended RayJob `julnet-retrain` that the infra overlays deploy (so the
overlay's cluster shape applies), or a manifest at a path or s3:// URI. Its cluster spec, deadlines and labels are
kept; the name, entrypoint, job id and runtime env are this step's, it is not suspended, and its cluster is shut down
when the job ends.
Waiting is only until KubeRay reports the job's dashboard address; from there raysubmit.follow streams the logs.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

from julnet import storage
from pipelines.target import JobFailed, RayTarget

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
KEEP_FINISHED_S = 600  # time to read the logs before KubeRay deletes a finished job's cluster
WAIT_START_S = 3600
POLL_S = 5.0


def load_template(source: str, api: Any = None, ns: str = "default") -> dict[str, Any]:
    """The template: a RayJob manifest at a path or s3:// URI, or (a bare name) the RayJob of that name in `ns`."""
    if "/" in source or source.endswith((".yaml", ".yml")):
        manifest = yaml.safe_load(storage.read_text(source))
    else:
        manifest = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, source)
    if not isinstance(manifest, dict) or manifest.get("kind") != "RayJob" or "spec" not in manifest:
        raise ValueError(f"{source} is not a RayJob manifest (kind: RayJob with a spec)")
    return manifest


def build_rayjob(template: dict[str, Any], name: str, entrypoint: str, runtime_env: dict[str, Any], num_gpus: float = 0.0) -> dict[str, Any]:
    """The RayJob for one step: the template with this step's name, entrypoint, job id and runtime env."""
    job = {k: copy.deepcopy(v) for k, v in template.items() if k in ("apiVersion", "kind", "spec")}
    old = template.get("metadata", {})
    annotations = {k: v for k, v in old.get("annotations", {}).items() if not k.startswith("kubectl.kubernetes.io/")}
    job["metadata"] = {"name": name, **({"labels": old["labels"]} if old.get("labels") else {}),
                       **({"annotations": annotations} if annotations else {})}
    spec = job["spec"]
    spec.update(entrypoint=entrypoint, jobId=name, runtimeEnvYAML=yaml.safe_dump(runtime_env, sort_keys=True), shutdownAfterJobFinishes=True,
                suspend=False)
    spec["ttlSecondsAfterFinished"] = max(int(spec.get("ttlSecondsAfterFinished", 0)), KEEP_FINISHED_S)
    spec.pop("entrypointNumGpus", None)
    if num_gpus:
        spec["entrypointNumGpus"] = num_gpus
    return job


def namespace(target: RayTarget) -> str:
    """The target's namespace, else the pod's own, else "default"."""
    if target.namespace:
        return target.namespace
    return NAMESPACE_FILE.read_text().strip() if NAMESPACE_FILE.exists() else "default"


def kubernetes_api() -> Any:
    """A CustomObjectsApi with the pod's service account (in a cluster) or the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def start_rayjob(target: RayTarget, name: str, entrypoint: str, runtime_env: dict[str, Any], num_gpus: float = 0.0, api: Any = None) -> str:
    """Create the RayJob and wait until KubeRay has submitted its job; returns the dashboard URL to follow it at."""
    api, ns = api or kubernetes_api(), namespace(target)
    job = build_rayjob(load_template(target.rayjob_template, api, ns), name, entrypoint, runtime_env, num_gpus)
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job)
    print(f"created RayJob {ns}/{name}: {entrypoint}", flush=True)
    deadline = time.monotonic() + WAIT_START_S
    while time.monotonic() < deadline:
        status = api.get_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name).get("status", {})
        if status.get("jobDeploymentStatus") == "Failed":
            raise JobFailed(f"RayJob {ns}/{name} failed before its job ran: {status.get('reason', '')} {status.get('message', '')}".strip())
        if status.get("dashboardURL") and status.get("jobStatus"):
            return f"http://{status['dashboardURL']}"
        time.sleep(POLL_S)
    raise JobFailed(f"RayJob {ns}/{name}: no job running after {WAIT_START_S} s (see kubectl describe rayjob {name} -n {ns})")
