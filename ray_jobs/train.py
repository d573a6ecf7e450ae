"""Ray job: train JULNet on a Ray cluster's workers from shards in object storage, tracked in MLflow.

    ray job submit --working-dir . -- python ray_jobs/train.py --config paper \\
        --data s3://data/hdtf/manifest.json --storage s3://runs --name hdtf-v1

Runs the curriculum in train.stages (or --stages a,b); resubmitting the same --name and --storage resumes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if not __package__:  # run as `python ray_jobs/train.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from julnet.config import ConfigError, load_config
from julnet.data.manifest import read_manifest
from julnet.pretrained import MissingWeightsError, check_configured
from julnet.training.distributed import train_run
from julnet.training.step import NonFiniteLossError
from ray_jobs.common import connect_ray, run_parser, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__, "run")
    parser.add_argument("--stages", default=None, help="comma-separated stage names (default: all, in order)")
    parser.add_argument("--init", default=None, help="warm-start checkpoint: path, s3://, runs:/ or models:/ URI")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
        read_manifest(args.data)  # bad config, data or weights fail here, before Ray or any worker starts
        check_configured(cfg)
        connect_ray()
        result = train_run(cfg, args.data, args.storage, args.name, args.stages.split(",") if args.stages else None, args.init)
    except (ConfigError, MissingWeightsError, FileNotFoundError, NonFiniteLossError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
