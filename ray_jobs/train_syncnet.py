"""Ray job: pre-train the SyncNet on in-sync and shifted pairs from the shards, track it in MLflow and register it.

    ray job submit --working-dir . -- python ray_jobs/train_syncnet.py --config paper \\
        --data s3://data/hdtf/manifest.json --name syncnet-hdtf --steps 20000

Prints the registered version; JULNet runs then use --set syncnet.weights.path=models:/julnet-syncnet/<version>.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

if not __package__:  # run as `python ray_jobs/train_syncnet.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from julnet.config import Config, ConfigError, load_config
from julnet.data.manifest import read_manifest
from julnet.registry import register_artifacts
from julnet.tracking import RunTracker, resolve_tracking_uri
from julnet.training.syncnet import WEIGHTS_FILE, clip_stage, manifest_sources, train_syncnet
from julnet.version import code_version
from ray_jobs.common import connect_ray, setup_logging


@ray.remote
def _pretrain(config: dict[str, Any], data: str, steps: int) -> tuple[dict[str, Any], bytes]:
    """Train where Ray places it (a GPU worker when configured); return the metrics and the weights."""
    cfg = Config.model_validate(config)
    stage = clip_stage(cfg)
    train_batches, eval_batches, heldout = manifest_sources(cfg, stage, data)
    with tempfile.TemporaryDirectory() as out:
        metrics = train_syncnet(cfg, train_batches, eval_batches, steps, Path(out), cfg.train.log_every, heldout)
        return metrics, (Path(out) / WEIGHTS_FILE).read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", required=True, help="dataset manifest URI")
    parser.add_argument("--name", required=True, help="MLflow run name")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--model-name", default="julnet-syncnet", help="registered model name")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
        read_manifest(args.data)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"train_syncnet: error: {exc}", file=sys.stderr)
        return 2
    connect_ray()
    print(json.dumps(pretrain_and_register(cfg, args.data, args.name, args.steps, args.model_name)))
    return 0


def pretrain_and_register(cfg: Config, data: str, name: str, steps: int, model_name: str) -> dict[str, Any]:
    """Train in a Ray task, then log the run to MLflow and register the weights as a new model version."""
    resources = {"num_cpus": cfg.train.cpus_per_worker, "num_gpus": 1 if cfg.train.use_gpu else 0}
    metrics, weights = ray.get(_pretrain.options(**resources).remote(cfg.to_dict(), data, steps))
    tracker = RunTracker(resolve_tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, name)
    tracker.start(params=cfg.flat(), tags={"julnet.kind": "syncnet", "julnet.data": data, "julnet.code_version": code_version()})
    tracker.log_metrics([(row["step"], {f"sync_{k}": v for k, v in row.items() if k != "step"}) for row in metrics["train"]])
    tracker.log_metrics([(steps, {f"heldout_{k}": v for k, v in metrics["eval"].items()})])
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / WEIGHTS_FILE).write_bytes(weights)
        tracker.log_artifacts(folder, "syncnet")
    tracker.log_dict({k: v for k, v in metrics.items() if k != "weights"}, "syncnet/metrics.json")
    accuracy = metrics["eval"]["sync_accuracy"]
    version = register_artifacts(tracker, model_name, "syncnet", {"heldout_sync_accuracy": f"{accuracy:.4f}", "heldout": metrics["heldout"]})
    tracker.end()
    return {"model": f"models:/{model_name}/{version}", "heldout": metrics["heldout"], "sync_accuracy": accuracy, "run_id": tracker.run_id}


if __name__ == "__main__":
    sys.exit(main())
