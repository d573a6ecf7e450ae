"""Ray job: `julnet train --name` — train the curriculum on a Ray cluster's workers, tracked in MLflow.

    ray job submit --working-dir . -- python ray_jobs/train.py --config paper \\
        --data s3://data/hdtf/manifest.json --storage s3://runs --name hdtf-v1

The same flags and defaults as `julnet train` (see `julnet train --help`) with --name: the stages in train.stages
(or --stages a,b), each from the previous one's checkpoint; resubmitting the same --name and --storage resumes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/train.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_jobs.common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """`julnet train ARGV` as this job's driver (ARGV names the run with --name)."""
    return run_command("train", argv)


if __name__ == "__main__":
    sys.exit(main())
