"""Training examples per second per CPU core at a stage's resolution, from local disk and from S3, next to what
the training step consumes.

Preprocesses the GRID sample clips (or uses --manifest), then times one process (one core) decoding and
assembling examples with the same code the trainer uses: --warmup untimed epochs, then --epochs timed ones
(median and spread of the per-epoch rates). The S3 figure uses a moto_server on 127.0.0.1 started here, so it
measures the S3 code path (listing, ranged reads), not a real network. The consumption figure is
benchmarks/train_step.py's measurement (`consumption`) of the full training step at the same preset, stage
and resolution, batch --batch, on one torch thread: samples/s one core's trainer takes.

    python benchmarks/loader_throughput.py [--config paper] [--stage frame] [--height H --width W] \
        [--epochs 3] [--manifest URI] [--out /tmp/loader_throughput.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import gpu_check as check  # noqa: E402
from julnet import storage  # noqa: E402
from julnet.config import StageConfig, load_config  # noqa: E402
from julnet.data.loader import iter_examples  # noqa: E402
from julnet.data.preprocess import run  # noqa: E402
from train_step import consumption  # noqa: E402

GRID = check.ROOT / "examples" / "grid"


def measure(manifest: str, stage: StageConfig, epochs: int, warmup: int) -> dict[str, Any]:
    """examples/s of iter_examples over whole epochs: `warmup` untimed, then the median and spread of `epochs` timed."""
    rates, count = [], 0
    for epoch in range(warmup + epochs):
        count, start = 0, time.perf_counter()
        for _ in iter_examples(manifest, stage, num_references=5, seed=0, epoch=epoch):
            count += 1
        if epoch >= warmup:
            rates.append(count / (time.perf_counter() - start))
    return {
        "examples_per_s_median": statistics.median(rates),
        "examples_per_s_min": min(rates),
        "examples_per_s_max": max(rates),
        "examples_per_s_stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "epochs": epochs,
        "examples_per_epoch": count,
    }


def describe(where: str, row: dict[str, Any], stage: StageConfig) -> str:
    return (f"{where}: {row['examples_per_s_median']:.0f} examples/s per core [{row['examples_per_s_min']:.0f}.."
            f"{row['examples_per_s_max']:.0f}] at {stage.height}x{stage.width} ({row['examples_per_epoch']} examples/epoch)")


def start_s3() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_S3=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="bench")
            return server, "s3://bench"
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="preset whose stage sets the resolution and the trainer (default: paper)")
    parser.add_argument("--stage", choices=["frame", "clip"], default="frame", help="the preset's largest stage of this kind")
    parser.add_argument("--height", type=int, default=None, help="override the stage's height")
    parser.add_argument("--width", type=int, default=None, help="override the stage's width")
    parser.add_argument("--manifest", help="an existing dataset manifest (default: preprocess the GRID samples)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of each source")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs of each source first")
    parser.add_argument("--batch", type=int, default=1, help="training step batch for the consumption figure")
    parser.add_argument("--train-repeats", type=int, default=3, help="timed training steps (0: no consumption figure)")
    parser.add_argument("--train-warmup", type=int, default=1, help="untimed training steps first")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.warmup < 0 or args.batch < 1 or args.train_repeats < 0 or args.train_warmup < 0:
        parser.error("--epochs and --batch must be >= 1; --warmup, --train-repeats and --train-warmup >= 0")
    torch.set_num_threads(1)
    cfg = load_config(args.config, list(check.RANDOM_WEIGHTS))
    stage = check.pick_stage(cfg, args.stage)
    if stage is None:
        parser.error(f"the {cfg.name} preset has no {args.stage} stage")
    stage = stage.model_copy(update={"height": args.height or stage.height, "width": args.width or stage.width, "batch_size": 1})
    machine = check.machine_info(torch.device("cpu"))
    check.say(f"machine: {machine['cpu_model']} ({machine['cpu_cores']} cores, {machine['cpu_cores_usable']} usable); "
              f"torch {machine['torch']}, 1 torch thread; {cfg.name} preset, {args.stage} stage at {stage.height}x{stage.width}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if manifest is None:
            raw = Path(tmp) / "raw"
            raw.mkdir()
            for clip in sorted(GRID.glob("*.mpg")):
                shutil.copy(clip, raw / clip.name)
            t0 = time.perf_counter()
            m, _ = run(str(raw), str(Path(tmp) / "data"), load_config("tiny", ["preprocess.val_fraction=0", "preprocess.test_fraction=0"]))
            frames = sum(v.frames for v in m.videos)
            check.say(f"preprocess: {len(m.videos)} clips, {frames} frames in {time.perf_counter() - t0:.1f} s (1 process)")
            manifest = str(Path(tmp) / "data" / "manifest.json")
        results["local"] = measure(manifest, stage, args.epochs, args.warmup)
        check.say(describe("local disk", results["local"], stage))
        server, bucket = start_s3()
        try:
            root = manifest.rsplit("/", 1)[0]
            for uri in storage.list_files(root):
                storage.upload_file(uri, f"{bucket}/data/{uri[len(root) + 1:]}")
            results["s3"] = measure(f"{bucket}/data/manifest.json", stage, args.epochs, args.warmup)
            check.say(describe("S3 (moto_server on loopback)", results["s3"], stage))
        finally:
            server.terminate()
            server.wait()
    if args.train_repeats:
        results["trainer"] = consumption(cfg, stage, args.batch, args.train_repeats, args.train_warmup, torch.device("cpu"))
        check.say(f"trainer consumes {results['trainer']['samples_per_s']:.3g} samples/s per core "
                  f"({results['trainer']['s_per_step_median']:.3f} s/step, batch {args.batch}, 1 torch thread): "
                  f"one loader core feeds {results['local']['examples_per_s_median'] / results['trainer']['samples_per_s']:.0f} trainer cores")
    settings = {"config": cfg.name, "stage": stage.name, "kind": stage.kind, "height": stage.height, "width": stage.width,
                "batch": args.batch, "manifest": args.manifest or "GRID samples, preprocessed here"}
    check.save_report(args.out, argv, machine, settings=settings, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
