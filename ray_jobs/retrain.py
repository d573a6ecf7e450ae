"""Ray job: `julnet retrain` — the whole retraining chain in one job, for RayCronJob and `ray job submit` by hand.

    ray job submit --working-dir . -- python ray_jobs/retrain.py --config paper \\
        --raw s3://raw/hdtf --dataset s3://data/hdtf --storage s3://runs --name nightly

check for new data -> preprocess -> (pre-train the SyncNet, --syncnet-steps) -> train -> evaluate -> register ->
promote (julnet.retrain). The same flags and defaults as `julnet retrain` (see `julnet retrain --help`). Prints one
JSON line at the end: status (promoted, not_promoted, no_new_data), reason, decision.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/retrain.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_jobs.common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """`julnet retrain ARGV` as this job's driver."""
    return run_command("retrain", argv)


if __name__ == "__main__":
    sys.exit(main())
