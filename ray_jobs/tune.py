"""Ray job: sweep JULNet's loss weights and histogram settings with Ray Tune (ASHA + Optuna), tracked in MLflow.

    ray job submit --working-dir . -- python ray_jobs/tune.py --config paper \\
        --data s3://data/hdtf/manifest.json --storage s3://sweeps --name hdtf-sweep1

The search space, scheduler and trial resources come from the config's `sweep` section. Rerunning the same --name
and --storage after the driver died resumes the sweep. Prints the results table, then the best trial's MLflow run
id and model URI as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if not __package__:  # run as `python ray_jobs/tune.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from julnet.config import ConfigError, load_config
from julnet.pretrained import MissingWeightsError
from julnet.training.sweep import check_sweep_inputs, format_table, run_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="preset name or YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", required=True, help="dataset manifest URI (from preprocess)")
    parser.add_argument("--storage", required=True, help="where the sweep keeps its state and checkpoints: a folder or s3:// prefix")
    parser.add_argument("--name", required=True, help="sweep name; the same name and storage resume the sweep")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        check_sweep_inputs(cfg, args.data)  # bad config, data or weights fail here, before Ray starts
        if not ray.is_initialized():
            ray.init()
        outcome = run_sweep(cfg, args.data, args.storage, args.name)
    except (ConfigError, MissingWeightsError, FileNotFoundError) as exc:
        print(f"tune: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(outcome))
    best = {key: outcome.get(key) for key in ("parent_run_id", "best_trial", "best_run_id", "best_model_uri", "best_metric")}
    print(json.dumps(best))
    if not outcome.get("best_run_id"):
        print("tune: error: no trial finished; see the table and the parent MLflow run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
