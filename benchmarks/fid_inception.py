"""Cost of FID on this machine: FID InceptionV3 images per second, and the Fréchet distance at D = 2048.

The network has seeded RANDOM weights (it costs exactly what the real ones do); no feature or distance
it gives is printed, only times. The Fréchet distance (two symmetric eigendecompositions at 2048x2048) is
the fixed cost every evaluation pays once, whatever the frame count.

    python benchmarks/fid_inception.py [--batch-size 8] [--batches 3] [--height 104 --width 80] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from julnet.evaluation.fid import RunningStatistics, frechet_distance
from julnet.evaluation.inception import FEATURES, FIDInceptionV3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--height", type=int, default=104)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = FIDInceptionV3().to(args.device)
    images = torch.rand(args.batch_size, 3, args.height, args.width, device=args.device)
    with torch.inference_mode():
        model(images)  # warm-up
        t0 = time.perf_counter()
        for i in range(args.batches):
            model(images)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            print(f"[inception] batch {i + 1}/{args.batches}", flush=True)
        seconds = time.perf_counter() - t0
    n = args.batch_size * args.batches
    print(f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {args.device}")
    print(f"FID Inception: {n / seconds:.2f} images/s ({seconds / n * 1000:.0f} ms/image, {args.height}x{args.width} resized to 299x299)")

    rng = np.random.default_rng(0)
    stats = [RunningStatistics().add(rng.random((n, FEATURES))) for _ in range(2)]
    t0 = time.perf_counter()
    frechet_distance(*stats[0].statistics(), *stats[1].statistics())
    print(f"Fréchet distance at D={FEATURES} ({n} samples each): {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
