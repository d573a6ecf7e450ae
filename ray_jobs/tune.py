"""Ray job: `julnet tune` — sweep JULNet's loss weights and histogram settings with Ray Tune (ASHA + Optuna).

    ray job submit --working-dir . -- python ray_jobs/tune.py --config paper \\
        --data s3://data/hdtf/manifest.json --storage s3://sweeps --name hdtf-sweep1

The same flags and defaults as `julnet tune` (see `julnet tune --help`). The search space, scheduler and trial
resources come from the config's `sweep` section. Rerunning the same --name and --storage after the driver died
resumes the sweep. Prints the results table, then the best trial's MLflow run id and model URI as JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/tune.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_jobs.common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """`julnet tune ARGV` as this job's driver."""
    return run_command("tune", argv)


if __name__ == "__main__":
    sys.exit(main())
