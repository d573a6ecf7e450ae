"""Ray from a julnet command: join the cluster (or start a local one) and run plain functions as Ray tasks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from julnet.progress import ray_runtime_env

T = TypeVar("T")


def connect_ray() -> None:
    """Join the cluster RAY_ADDRESS names (or the job's), else start a local one; julnet's logging in the workers."""
    import ray

    if not ray.is_initialized():
        ray.init(runtime_env=ray_runtime_env())


def ray_mapper(num_cpus: float) -> Callable[[Callable[[Any], T], Sequence[Any]], Iterator[T]]:
    """A `map` that runs each call as a Ray task (retried twice), yielding results as they finish (any order)."""
    import ray

    def mapper(fn: Callable[[Any], T], items: Sequence[Any]) -> Iterator[T]:
        task = ray.remote(_call).options(num_cpus=num_cpus, max_retries=2)
        pending = [task.remote(fn, item) for item in items]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    return mapper


def _call(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def ray_task(fn: Callable[..., T], args: Sequence[Any], num_cpus: float, num_gpus: float) -> T:
    """`fn(*args)` as one Ray task; the task sees this driver's MLflow settings, and its error comes back as raised."""
    import ray

    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_TRACKING_")}  # it resolves runs:/ and models:/ as we do
    task = ray.remote(_call).options(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env={"env_vars": env})
    try:
        return ray.get(task.remote(fn, *args))
    except ray.exceptions.RayTaskError as exc:
        raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
