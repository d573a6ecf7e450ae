"""Run one step of the pipeline as a Ray job and follow it: its logs stream into the step's log, its failure fails the step.

Two ways to reach Ray, chosen per run (`RayTarget.backend`):
  cluster  submit to an existing cluster's job API with Ray's JobSubmissionClient (token from RAY_AUTH_TOKEN);
  rayjob   create a KubeRay RayJob from a template (pipelines.rayjob), wait for its cluster, then follow the job
           the same way through the dashboard address KubeRay reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from ray.job_submission import JobStatus, JobSubmissionClient

from julnet.retrain import error_line
from pipelines.rayjob import start_rayjob
from pipelines.target import JobFailed, RayTarget, job_runtime_env

log = logging.getLogger(__name__)

POLL_S = 2.0


def run_job(target: RayTarget, step: str, entrypoint: str, env_vars: dict[str, str], num_gpus: float = 0.0) -> str:
    """Run `entrypoint` as a Ray job on the target, print its logs as they come; returns them, or raises JobFailed."""
    job_id = f"julnet-{step}-{uuid.uuid4().hex[:8]}"
    runtime_env = job_runtime_env(target, env_vars)
    if target.backend == "rayjob":
        address = start_rayjob(target, job_id, entrypoint, runtime_env, num_gpus)
        return follow(JobSubmissionClient(address), job_id)
    client = JobSubmissionClient(target.address)
    client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env, entrypoint_num_gpus=num_gpus or None)
    print(f"submitted Ray job {job_id} to {target.address}: {entrypoint}", flush=True)
    return follow(client, job_id)


def follow(client: JobSubmissionClient, job_id: str) -> str:
    """Stream a job's logs to stdout until it ends; returns the logs, or raises JobFailed with the job's error line."""
    try:
        logs = asyncio.run(_tail(client, job_id))
    except RuntimeError as exc:  # the log stream broke: wait for the end and take the logs in one piece
        log.warning("log stream of %s broke (%s); polling", job_id, exc)
        logs = ""
    status = _wait_terminal(client, job_id)
    logs = logs or client.get_job_logs(job_id)
    if status != JobStatus.SUCCEEDED:
        info = (client.get_job_info(job_id).message or "").strip().splitlines()
        raise JobFailed(f"Ray job {job_id} {status}: {error_line(logs) or (info[0] if info else 'no error message')}")
    return logs


async def _tail(client: JobSubmissionClient, job_id: str) -> str:
    """Print each chunk of the job's logs as it arrives; return them all."""
    chunks = []
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)
        chunks.append(chunk)
    return "".join(chunks)


def _wait_terminal(client: JobSubmissionClient, job_id: str) -> JobStatus:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED."""
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(POLL_S)
    return status
