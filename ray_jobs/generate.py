"""Ray job: `julnet generate --manifest` — dub every (video, audio) pair of a JSON Lines manifest on Ray Data actors.

    ray job submit --working-dir . -- python ray_jobs/generate.py --manifest s3://jobs/pairs.jsonl \\
        --out s3://dubbed/run1 --model models:/julnet@champion --workers 4 --device cuda --gpus-per-worker 1

The same flags and defaults as `julnet generate` (see its --help). Manifest lines: {"video": URI, "audio": URI,
"name"?: str} (julnet/batch.py); outputs go to <out>/<name>/; re-running resumes. Prints a table of the pairs it ran;
exits 1 if any pair failed (its reason is in the table and in <out>/summary.json), 2 on bad arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/generate.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray_jobs.common import run_command


def main(argv: Sequence[str] | None = None) -> int:
    """`julnet generate ARGV` as this job's driver."""
    return run_command("generate", argv)


if __name__ == "__main__":
    sys.exit(main())
