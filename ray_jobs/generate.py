"""Ray job: dub every (video, audio) pair of a JSON Lines manifest into object storage; re-running resumes.

    ray job submit --working-dir . -- python ray_jobs/generate.py --manifest s3://jobs/pairs.jsonl \\
        --output s3://dubbed/run1 --model runs/hdtf-v1 --workers 4 --device cuda --gpus-per-worker 1

Manifest lines: {"video": URI, "audio": URI, "name"?: str} (see julnet/batch.py). Prints a table of the pairs
it ran; exits 1 if any pair failed (its reason is in the table and in <output>/summary.json), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python ray_jobs/generate.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from julnet.batch import ManifestError, format_table, run_batch
from julnet.config import ConfigError
from julnet.errors import GenerateError
from julnet.progress import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="JSON Lines manifest of pairs: path, file:// or s3:// URI")
    parser.add_argument("--output", required=True, help="output folder or s3:// prefix: <output>/<name>/{dubbed.mp4,report.json}")
    parser.add_argument("--model", required=True, help="run directory, checkpoint directory or state.pt (path or s3://), or what load_model takes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="generate.KEY=VALUE", help="override a generate setting")
    parser.add_argument("--uncertainty-video", action="store_true", help="also write <output>/<name>/sigma.mp4")
    parser.add_argument("--workers", type=int, default=1, help="Ray Data actors, each holding the model once")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    setup_logging()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if min(args.cpus_per_worker, args.gpus_per_worker) < 0:
        parser.error("--cpus-per-worker and --gpus-per-worker must not be negative")
    if args.device == "cuda" and args.gpus_per_worker == 0:
        parser.error("--device cuda needs --gpus-per-worker > 0")
    try:
        result = run_batch(
            args.manifest, args.output, args.model, overrides=args.overrides, uncertainty_video=args.uncertainty_video,
            workers=args.workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, device=args.device,
        )
    except (ManifestError, ConfigError, GenerateError, FileNotFoundError) as exc:
        print(f"generate: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
