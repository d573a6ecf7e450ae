"""Ray job: `julnet preprocess --ray` — preprocess videos into shards, one Ray task per shard; re-running resumes.

    ray job submit --working-dir . -- python ray_jobs/preprocess.py --config paper --input s3://raw/hdtf --output s3://data/hdtf

The same flags and defaults as `julnet preprocess` (see its --help), with --ray always on (--cpus-per-task each).
Like it, the job loads the AV-sync SyncNet (julnet.evaluation.av_sync.load_scorer: the expert one, else the project's
own from syncnet.weights) once in the driver and hands it to every shard task; with neither, the manifest says skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/preprocess.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_jobs.common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """`julnet preprocess --ray ARGV` as this job's driver."""
    return run_command("preprocess", ["--ray", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
