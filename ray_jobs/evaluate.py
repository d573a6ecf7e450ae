"""Ray job: evaluate a model on a dataset's held-out split in a Ray task, write the JSON (and its plot) to storage, log to MLflow.

    ray job submit --working-dir . -- python ray_jobs/evaluate.py --model models:/julnet/3 \\
        --data s3://data/hdtf/manifest.json --output s3://evals/julnet-3/result.json --num-gpus 1 --log

The task runs `julnet.evaluation.suite.evaluate_with_config`, the same function as `julnet evaluate`; the model
and the data must be reachable from the worker (an MLflow URI, object storage, or a shared path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if not __package__:  # run as `python ray_jobs/evaluate.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from julnet.cli import connect_ray
from julnet.config import Config, ConfigError, load_config
from julnet.data.manifest import read_manifest
from julnet.errors import GenerateError, MissingWeightsError
from julnet.evaluation.publish import log_to_mlflow, save_result
from julnet.evaluation.result import EvaluationResult, format_table
from julnet.evaluation.suite import evaluate_with_config
from julnet.progress import setup_logging
from julnet.tracking import resolve_tracking_uri


@ray.remote
def _evaluate(model: str, data: str, config: str | None, overrides: list[str], device: str) -> tuple[Config, EvaluationResult]:
    return evaluate_with_config(model, data, config, overrides, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory, checkpoint, or models:/ / runs:/ URI")
    parser.add_argument("--data", required=True, help="dataset manifest URI")
    parser.add_argument("--config", default=None, help="preset or YAML for the evaluation settings (default: the model's own config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", required=True, help="URI of the result JSON (path, file:// or s3://); the plot goes beside it")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs of the evaluation task")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs of the evaluation task (the networks run on CUDA when > 0)")
    tracking = parser.add_mutually_exclusive_group()
    tracking.add_argument("--tracking-run", default=None, metavar="RUN_ID", help="log onto this MLflow run")
    tracking.add_argument("--log", action="store_true", help="log to a linked MLflow evaluation run")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        if args.config:
            load_config(args.config, args.overrides)
        read_manifest(args.data)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    connect_ray()
    device = "cuda" if args.num_gpus > 0 else "cpu"
    # The task resolves runs:/ and models:/ where this driver does (a task sees the job's environment, not ours).
    mlflow_env = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    tracking = {k: os.environ[k] for k in mlflow_env if k in os.environ}
    task = _evaluate.options(num_cpus=args.num_cpus, num_gpus=args.num_gpus, runtime_env={"env_vars": tracking})
    try:
        settings, result = ray.get(task.remote(args.model, args.data, args.config, args.overrides, device))
    except (ConfigError, GenerateError, MissingWeightsError, FileNotFoundError, ValueError) as exc:  # Ray re-raises the task's error type
        print(f"evaluate: error: {getattr(exc, 'cause', None) or exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    plot = save_result(result, args.output)
    summary = {"result": args.output, "plot": plot, "metrics": result.metrics}
    if args.tracking_run or args.log:
        uri = resolve_tracking_uri(settings.tracking.uri)
        summary["mlflow_run"] = log_to_mlflow(result, uri, run_id=args.tracking_run, experiment=settings.tracking.experiment)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
