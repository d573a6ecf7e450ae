"""Ray job: preprocess videos into shards in parallel, one Ray task per shard; re-running resumes.

    ray job submit --working-dir . -- python ray_jobs/preprocess.py --input s3://raw/hdtf --output s3://data/hdtf
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as `python ray_jobs/preprocess.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from julnet.config import load_config
from julnet.data.manifest import ShardResult
from julnet.data.preprocess import run
from ray_jobs.common import connect_ray, setup_logging


@ray.remote
def _call(fn: Callable[[Any], ShardResult], item: Any) -> ShardResult:
    return fn(item)


def ray_mapper(num_cpus: float) -> Callable[[Callable[[Any], ShardResult], Sequence[Any]], Iterator[ShardResult]]:
    """Run shard tasks as Ray tasks, yielding results as they finish (any order)."""

    def mapper(fn: Callable[[Any], ShardResult], items: Sequence[Any]) -> Iterator[ShardResult]:
        task = _call.options(num_cpus=num_cpus, max_retries=2)
        pending = [task.remote(fn, item) for item in items]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    return mapper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--cpus-per-task", type=float, default=1.0)
    args = parser.parse_args(argv)
    setup_logging()
    cfg = load_config(args.config, args.overrides)
    connect_ray()
    manifest, report = run(args.input, args.output, cfg, ray_mapper(args.cpus_per_task))
    print(json.dumps({"manifest": f"{args.output.rstrip('/')}/manifest.json", "accepted": report.accepted, "rejected": len(report.rejected)}))
    return 0 if report.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
