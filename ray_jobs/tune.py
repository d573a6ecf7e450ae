"""Ray job: sweep JULNet's loss weights and histogram settings with Ray Tune (ASHA + Optuna), tracked in MLflow.

    ray job submit --working-dir . -- python ray_jobs/tune.py --config paper \\
        --data s3://data/hdtf/manifest.json --storage s3://sweeps --name hdtf-sweep1

The search space, scheduler and trial resources come from the config's `sweep` section. Rerunning the same --name
and --storage after the driver died resumes the sweep. Prints the results table, then the best trial's MLflow run
id and model URI as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if not __package__:  # run as `python ray_jobs/tune.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from julnet.config import ConfigError, load_config
from julnet.pretrained import MissingWeightsError
from julnet.training.sweep import check_sweep_inputs, format_table, run_sweep
from ray_jobs.common import connect_ray, run_parser, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__, "sweep")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
        check_sweep_inputs(cfg, args.data)  # bad config, data or weights fail here, before Ray starts
        connect_ray()
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
