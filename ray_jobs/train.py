"""Ray job: train JULNet on a Ray cluster's workers from shards in object storage, tracked in MLflow.

    ray job submit --working-dir . -- python ray_jobs/train.py --config paper \\
        --data s3://data/hdtf/manifest.json --storage s3://runs --name hdtf-v1

Runs the curriculum in train.stages (or --stages a,b); resubmitting the same --name and --storage resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if not __package__:  # run as `python ray_jobs/train.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from julnet.config import ConfigError, load_config
from julnet.data.manifest import read_manifest
from julnet.pretrained import MissingWeightsError, check_configured
from julnet.training.distributed import train_run
from julnet.training.step import NonFiniteLossError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="preset name or YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", required=True, help="dataset manifest URI (from preprocess)")
    parser.add_argument("--storage", required=True, help="where runs keep checkpoints: a folder or s3:// prefix")
    parser.add_argument("--name", required=True, help="run name; the same name and storage resume the run")
    parser.add_argument("--stages", default=None, help="comma-separated stage names (default: all, in order)")
    parser.add_argument("--init", default=None, help="warm-start checkpoint: path, s3://, runs:/ or models:/ URI")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        read_manifest(args.data)  # bad config, data or weights fail here, before Ray or any worker starts
        check_configured(cfg)
        if not ray.is_initialized():
            ray.init()
        result = train_run(cfg, args.data, args.storage, args.name, args.stages.split(",") if args.stages else None, args.init)
    except (ConfigError, MissingWeightsError, FileNotFoundError, NonFiniteLossError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
