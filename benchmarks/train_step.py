"""The full training step at one preset, stage and batch: s/step, samples/s, and the uncertainty overhead ratio.

    OMP_NUM_THREADS=1 python benchmarks/train_step.py --config tiny --stage frame --batch 1 --repeats 10 \
        --threads 1 --out /tmp/train_step.json

The step is julnet.training.step.TrainStep as training runs it (both discriminators' updates, then generator +
uncertainty module with every loss and the optimiser steps, in the precision, memory format and optimiser that
train.* selects on this device), on synthetic faces resident on the device. In the same run and interleaved
step by step (alternating which goes first), the same step with the uncertainty module stubbed out and L_un
absent: the uncertainty overhead ratio. After --warmup untimed steps of each, --repeats timed steps of each;
median, min, max and stdev of s/step, samples/s (a sample is a frame in the frame stage and a clip in the clip
stage). FLOPs of one step from torch's FlopCounterMode (matmuls and convolutions, forward and backward), hence
achieved TFLOP/s, and on CUDA MFU against --peak-tflops or the datasheet peak of a known GPU.

The measurement is benchmarks/gpu_check.py's (measure_step): this script is the one-configuration front end;
gpu_check.py adds the batch search, inference and the CUDA profiles. It needs torch and julnet's own
dependencies (not Ray or MLflow). VGG-19 and SyncNet run on random weights (allow_random_init): same cost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import gpu_check as check  # noqa: E402
from julnet.config import Config, StageConfig, load_config  # noqa: E402


def consumption(cfg: Config, stage: StageConfig, batch: int, repeats: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """What the trainer consumes: s/step and samples/s of the full step alone (no uncertainty-off variant) at `stage`."""
    times, _ = check.interleaved(check.Trainer(cfg, device, uncertainty=True), None, check.make_batch(cfg, stage, batch, device),
                                 stage.kind, repeats, warmup, 1e9)
    return check.figures(times, batch, cfg.audio.window if stage.kind == "clip" else 1, None, None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="paper", help="preset name or YAML path (default: paper)")
    p.add_argument("--stage", choices=["frame", "clip"], default="frame", help="the preset's largest stage of this kind")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10, help="timed steps of each variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each variant first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: datasheet figure of H100/H200/A100)")
    p.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = check.machine_info(device)
    check.say(
        f"machine: {machine['cpu_model']} ({machine['cpu_cores']} cores, {machine['cpu_cores_usable']} usable, "
        f"{machine['torch_threads']} torch threads); "
        + (f"GPU {machine['gpu_name']} {machine['gpu_memory_gib']} GiB; " if device.type == "cuda" else "no GPU; ")
        + f"torch {machine['torch']}, Python {machine['python']}"
    )
    cfg = load_config(args.config, [*check.RANDOM_WEIGHTS, *args.overrides])
    stage = check.pick_stage(cfg, args.stage)
    if stage is None:
        p.error(f"the {cfg.name} preset has no {args.stage} stage")
    peak, peak_source = check.peak_tflops(device, args.peak_tflops)
    full = check.Trainer(cfg, device, uncertainty=True)
    off = check.Trainer(cfg, device, uncertainty=False)
    settings: dict[str, Any] = {
        "config": cfg.name,
        "stage": stage.name,
        "kind": args.stage,
        "height": stage.height,
        "width": stage.width,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": str(device),
        "precision": full.precision(),
        "channels_last": full.step.memory_format == torch.channels_last,
        "fused_adam": bool(full.optimizers.generator.defaults.get("fused")),
        "compile": cfg.train.compile,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "random_weights": "VGG-19 and SyncNet on random init (allow_random_init): timings are unaffected",
        "batch_on_device": "synthetic faces built once and kept on the device: no data loading is timed",
        "uncertainty_off": "uncertainty module replaced by a parameter-free stub and L_un dropped",
    }
    check.say(
        f"{cfg.name} preset, {args.stage} stage {stage.name} ({stage.height}x{stage.width}), batch {args.batch}, "
        f"{settings['precision']}; warm-up {args.warmup}, repeats {args.repeats} of each variant"
    )
    batch = check.make_batch(cfg, stage, args.batch, device)
    row = check.measure_step(full, off, batch, args.stage, args.repeats, args.warmup, 1e9, peak)
    check.say(check.describe_step(row, args.stage))
    check.save_report(args.out, argv, machine, settings=settings, result=row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
