"""Training examples per second per CPU core at a stage's resolution, from local disk and from S3.

Preprocesses the GRID sample clips (or uses --manifest), then times one process (one core) decoding and
assembling examples with the same code the trainer uses. The S3 figure uses a moto_server on 127.0.0.1
started here, so it measures the S3 code path (listing, ranged reads), not a real network.

    python benchmarks/loader_throughput.py [--height 416 --width 320] [--manifest URI]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from julnet import storage  # noqa: E402
from julnet.config import StageConfig, load_config  # noqa: E402
from julnet.data.loader import iter_examples  # noqa: E402
from julnet.data.preprocess import run  # noqa: E402

GRID = ROOT / "examples" / "grid"


def measure(manifest: str, stage: StageConfig, epochs: int) -> tuple[float, int]:
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        for _ in iter_examples(manifest, stage, num_references=5, seed=0, epoch=epoch):
            count += 1
    return count / (time.perf_counter() - start), count


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", help="an existing dataset manifest (default: preprocess the GRID samples)")
    parser.add_argument("--height", type=int, default=416)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    stage = StageConfig(name="bench", kind="frame", height=args.height, width=args.width, batch_size=1, steps=1)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if manifest is None:
            raw = Path(tmp) / "raw"
            raw.mkdir()
            for clip in sorted(GRID.glob("*.mpg")):
                shutil.copy(clip, raw / clip.name)
            t0 = time.perf_counter()
            cfg = load_config("tiny", ["preprocess.val_fraction=0", "preprocess.test_fraction=0"])
            m, _ = run(str(raw), str(Path(tmp) / "data"), cfg)
            frames = sum(v.frames for v in m.videos)
            print(f"preprocess: {len(m.videos)} clips, {frames} frames in {time.perf_counter() - t0:.1f} s (1 process)")
            manifest = str(Path(tmp) / "data" / "manifest.json")
        rate, n = measure(manifest, stage, args.epochs)
        print(f"local disk: {rate:.0f} examples/s per core at {args.height}x{args.width} ({n} examples)")
        server, bucket = start_s3()
        try:
            root = manifest.rsplit("/", 1)[0]
            for uri in storage.list_files(root):
                storage.upload_file(uri, f"{bucket}/data/{uri[len(root) + 1:]}")
            rate, n = measure(f"{bucket}/data/manifest.json", stage, args.epochs)
            print(f"S3 (moto_server on loopback): {rate:.0f} examples/s per core at {args.height}x{args.width} ({n} examples)")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
