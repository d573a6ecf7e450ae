"""Where a pipeline's Ray jobs run (RayTarget), and how a job that did not succeed is reported (JobFailed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

BACKENDS = ("cluster", "rayjob")


class JobFailed(RuntimeError):
    """A Ray job ended FAILED or STOPPED; the message names the job and its error line."""


@dataclass(frozen=True)
class RayTarget:
    """Where a pipeline's Ray jobs run."""

    address: str = ""  # dashboard URL of an existing cluster, e.g. http://julnet-ray-head-svc:8265 (backend "cluster")
    backend: str = "cluster"
    rayjob_template: str = ""  # a RayJob's name in the namespace, or a path or s3:// URI of a manifest (backend "rayjob")
    namespace: str = ""  # where RayJobs are created; "" = the pipeline pod's own namespace
    runtime_env: dict[str, Any] = field(default_factory=dict)  # merged into every job's runtime env (e.g. working_dir)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"ray backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "cluster" and not self.address:
            raise ValueError("ray backend 'cluster' needs the cluster's dashboard address (e.g. http://julnet-ray-head-svc:8265)")
        if self.backend == "rayjob" and not self.rayjob_template:
            raise ValueError("ray backend 'rayjob' needs a RayJob template (a RayJob's name, or a path or s3:// URI of a manifest)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_runtime_env(target: RayTarget, env_vars: dict[str, str]) -> dict[str, Any]:
    """The target's runtime env with `env_vars` added to its environment variables."""
    runtime_env = dict(target.runtime_env)
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env_vars}
    return runtime_env
