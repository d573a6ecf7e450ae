"""Ray Train scaling on the CPU: samples/s with 1 and 2 workers (gloo), tiny and paper presets, in one run.

    python benchmarks/train_scaling.py [--presets tiny paper] [--workers 1 2] [--steps 12] [--warmup 2] \
        [--cpus-per-worker 0.5] [--data MANIFEST_URI] [--out /tmp/train_scaling.json]

Starts its own local Ray (loopback only, token auth with a fresh token, its own temporary folder) and trains the
preset's first frame stage for --steps steps per worker count through julnet.training.distributed.train_run, the
path `julnet train --name --storage` takes: Ray Data reading the shards, a TorchTrainer with DDP over gloo, MLflow
(sqlite in the temporary folder) and checkpoints. Data: the GRID sample clips preprocessed here, or --data.
samples/s is what the workers log every step (world size x batch / step time, rank 0's clock); the first
--warmup steps (Ray Data start-up, first-call costs) are left out, and the rest give the median and spread. The
wall time of each fit, worker start-up included, is reported too. VGG-19 and SyncNet run on random weights
(allow_random_init): the same cost as trained ones. The paper preset is slow on a few cores: choose --steps.
"""

from __future__ import annotations

import os
import secrets

# Read once when Ray is first imported: loopback only, and this run's own token (never ~/.ray's or a stray cluster's).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
os.environ.pop("RAY_ADDRESS", None)

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import gpu_check as check  # noqa: E402
from julnet import tracking  # noqa: E402
from julnet.config import load_config  # noqa: E402
from julnet.data.preprocess import run as preprocess  # noqa: E402

GRID = check.ROOT / "examples" / "grid"


def fit(preset: str, workers: int, args: argparse.Namespace, data: str, tmp: Path) -> dict[str, Any]:
    """One train_run of the preset's first frame stage on `workers` Ray Train workers: its logged samples/s."""
    from julnet.training.distributed import train_run

    cfg = load_config(preset, list(check.RANDOM_WEIGHTS))
    index, stage = next((i, s) for i, s in enumerate(cfg.train.stages) if s.kind == "frame")
    batch = args.batch or stage.batch_size
    cfg = load_config(preset, [
        *check.RANDOM_WEIGHTS, f"train.stages.{index}.steps={args.steps}", f"train.stages.{index}.batch_size={batch}",
        "train.log_every=1", f"train.checkpoint_every={args.steps}", f"tracking.image_every={args.steps + 1}",
        f"train.num_workers={workers}", f"train.cpus_per_worker={args.cpus_per_worker}", "train.use_gpu=false",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
    ])
    start = time.perf_counter()
    result = train_run(cfg, data, str(tmp / "runs"), f"{preset}-{workers}w", [stage.name])
    wall = time.perf_counter() - start
    history = sorted(tracking.client(result["tracking_uri"]).get_metric_history(result["run_id"], "samples_per_s"), key=lambda m: m.step)
    rates = [m.value for m in history][args.warmup :]
    if not rates:
        raise RuntimeError(f"{preset} on {workers} workers logged {len(history)} samples/s values, none after {args.warmup} warm-up steps")
    return {
        "preset": preset, "workers": workers, "stage": stage.name, "height": stage.height, "width": stage.width,
        "batch_per_worker": batch, "steps": args.steps, "warmup_steps": args.warmup,
        "samples_per_s_median": statistics.median(rates), "samples_per_s_min": min(rates), "samples_per_s_max": max(rates),
        "samples_per_s_stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0, "timed_steps": len(rates),
        "fit_wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray Train worker counts, one fit each")
    p.add_argument("--steps", type=int, default=12, help="training steps per fit")
    p.add_argument("--warmup", type=int, default=2, help="first steps of each fit left out of the figures")
    p.add_argument("--batch", type=int, default=None, help="batch per worker (default: the stage's)")
    p.add_argument("--cpus-per-worker", type=float, default=0.5, help="Ray CPUs per worker; leave some to Ray Data (default 0.5)")
    p.add_argument("--data", help="a dataset manifest URI (default: preprocess the GRID samples)")
    p.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.warmup >= args.steps or min(args.workers) < 1 or args.cpus_per_worker <= 0:
        p.error("--steps must be >= 1 and above --warmup (>= 0); --workers and --cpus-per-worker positive")
    import ray

    from julnet.progress import ray_runtime_env

    machine = check.machine_info(torch.device("cpu"))
    check.say(f"machine: {machine['cpu_model']} ({machine['cpu_cores']} cores, {machine['cpu_cores_usable']} usable); "
              f"torch {machine['torch']}, ray {ray.__version__}; CPU workers over gloo")
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="julnet-scaling-"))  # short: Ray's socket paths live under it
    try:
        data = args.data
        if data is None:
            raw = tmp / "raw"
            raw.mkdir()
            for clip in sorted(GRID.glob("*.mpg")):
                shutil.copy(clip, raw / clip.name)
            preprocess(str(raw), str(tmp / "data"), load_config("tiny", ["preprocess.val_fraction=0", "preprocess.test_fraction=0"]))
            data = str(tmp / "data" / "manifest.json")
        # The workers import julnet from this checkout, as this script does (not from wherever it is installed).
        runtime_env = ray_runtime_env()
        path = os.pathsep.join(p for p in (str(check.ROOT), os.environ.get("PYTHONPATH")) if p)
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), "PYTHONPATH": path}
        ray.init(address="local", num_cpus=machine["cpu_cores_usable"], include_dashboard=False, log_to_driver=False,
                 runtime_env=runtime_env, _temp_dir=str(tmp / "ray"))
        try:
            for preset in args.presets:
                for workers in args.workers:
                    row = fit(preset, workers, args, data, tmp)
                    results.append(row)
                    check.say(f"{preset} {row['stage']} {row['height']}x{row['width']}, {workers} worker(s) x batch {row['batch_per_worker']}: "
                              f"{row['samples_per_s_median']:.2f} samples/s [{row['samples_per_s_min']:.2f}..{row['samples_per_s_max']:.2f}, "
                              f"n={row['timed_steps']}]; fit {row['fit_wall_s']:.0f} s with start-up")
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    settings = {"cpus_per_worker": args.cpus_per_worker, "data": args.data or "GRID samples, preprocessed here", "backend": "gloo"}
    check.save_report(args.out, argv, machine, settings=settings, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
