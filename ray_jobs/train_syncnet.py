"""Ray job: `julnet train-syncnet --name` — pre-train the SyncNet in a Ray task, track it in MLflow and register it.

    ray job submit --working-dir . -- python ray_jobs/train_syncnet.py --config paper \\
        --data s3://data/hdtf/manifest.json --name syncnet-hdtf --steps 20000

The same flags and defaults as `julnet train-syncnet` (see its --help): --name trains in a Ray task and registers
the weights as --model-name (default julnet-syncnet). Prints the registered version; JULNet runs then use
--set syncnet.weights.path=models:/julnet-syncnet/<version>.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/train_syncnet.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_jobs.common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """`julnet train-syncnet ARGV` as this job's driver."""
    return run_command("train-syncnet", argv)


if __name__ == "__main__":
    sys.exit(main())
