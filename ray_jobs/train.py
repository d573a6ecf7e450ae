"""Ray job: train JULNet on a Ray cluster's workers from shards in object storage, tracked in MLflow.

    ray job submit --working-dir . -- python ray_jobs/train.py --config paper \\
        --data s3://data/hdtf/manifest.json --storage s3://runs --name hdtf-v1

Runs the curriculum in train.stages (or --stages a,b); resubmitting the same --name and --storage resumes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as `python ray_jobs/train.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from julnet.cli import add_config_args, add_run_args, connect_ray
from julnet.config import ConfigError, load_config
from julnet.data.manifest import read_manifest
from julnet.pretrained import MissingWeightsError, check_configured
from julnet.progress import setup_logging
from julnet.training.distributed import train_run
from julnet.training.step import NonFiniteLossError
from ray_jobs.common import run_job


def build_parser() -> argparse.ArgumentParser:
    """The job's command line: the CLI's --config/--set and run flags, --stages and --init."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_run_args(parser, "run")
    parser.add_argument("--stages", default=None, help="comma-separated stage names (default: all, in order)")
    parser.add_argument("--init", default=None, help="warm-start checkpoint: path, s3://, runs:/ or models:/ URI")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train the curriculum on the cluster's workers; the result as JSON, or a one-line error (2)."""
    args = build_parser().parse_args(argv)
    setup_logging()

    def work() -> dict:
        cfg = load_config(args.config, args.overrides)
        read_manifest(args.data)  # bad config, data or weights fail here, before Ray or any worker starts
        check_configured(cfg)
        connect_ray()
        return train_run(cfg, args.data, args.storage, args.name, args.stages.split(",") if args.stages else None, args.init)

    return run_job("train", work, (ConfigError, MissingWeightsError, FileNotFoundError, NonFiniteLossError))


if __name__ == "__main__":
    sys.exit(main())
