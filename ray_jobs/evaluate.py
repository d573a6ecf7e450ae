"""Ray job: `julnet evaluate --ray` — evaluate a model on a dataset's held-out split in a Ray task, log to MLflow.

    ray job submit --working-dir . -- python ray_jobs/evaluate.py --model models:/julnet/3 \\
        --data s3://data/hdtf/manifest.json --out s3://evals/julnet-3/result.json --device cuda --log

The same flags and defaults as `julnet evaluate` (see its --help), with --ray always on: the suite runs in one task
(--cpus-per-task, and a GPU with --device cuda). The model and the data must be reachable from the worker (an MLflow
URI, object storage, or a shared path). Prints the table, then a JSON line with the result URI and metrics.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/evaluate.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_jobs.common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """`julnet evaluate --ray ARGV` as this job's driver."""
    return run_command("evaluate", ["--ray", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
