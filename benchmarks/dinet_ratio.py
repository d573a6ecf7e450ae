"""JULNet against DINet's public reference code, side by side in one process: the ratio issue 15 asks to be <= 1.0.

    OMP_NUM_THREADS=1 python benchmarks/dinet_ratio.py --dinet ~/src/DINet --threads 1 --json /tmp/dinet_ratio.json

`--dinet` is your checkout of github.com/MRzzm/DINet (julnet neither ships nor downloads it); its
models/DINet.py is imported from there. Its SynchronizedBatchNorm is plain batch norm on one device: when the
checkout's `sync_batchnorm` package cannot be imported, torch's BatchNorm stands in for it.

At the paper preset's widths and crop (416x320, 5 references, batch 1, random weights), interleaved round by
round in a rotating order, after --warmup untimed rounds, --repeats timed rounds of:
- training: forward + backward of an L1 loss against a target, for DINet's generator; julnet's generator alone;
  and julnet's generator + uncertainty module with L_un (eq. 9), the part of julnet's step DINet has no twin for;
- inference: one forward pass without autograd, DINet's generator against julnet's generator + uncertainty module,
  as is and with its batch norms folded into the convolutions as `julnet generate` and `julnet evaluate` run it;
- the whole training step (julnet.training.step.TrainStep, frame stage: both discriminators' updates, generator
  with every loss, optimiser steps) with DINet's generator in julnet's place (no uncertainty module, no L_un: the
  step DINet trains with, since JULNet reuses its discriminators and losses), julnet's full step, and julnet's
  step with the uncertainty module and L_un off.
It prints the machine, median [min..max] seconds of each, julnet / DINet ratios of the medians and the median
[min..max] of the per-round ratios, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import gpu_check as check  # noqa: E402
from gpu_check import RANDOM_WEIGHTS, machine_info  # noqa: E402
from julnet.config import load_config  # noqa: E402
from julnet.losses.uncertainty import uncertainty_loss  # noqa: E402
from julnet.models.blocks import fold_batch_norm  # noqa: E402
from julnet.models.generator import GeneratorOutput  # noqa: E402
from julnet.models.talking_face import build_talking_face  # noqa: E402


def load_dinet(root: Path) -> type[nn.Module]:
    """The DINet generator class from a checkout of its public code (models/DINet.py)."""
    path = root.expanduser() / "models" / "DINet.py"
    if not path.is_file():
        raise SystemExit(f"--dinet {root}: no models/DINet.py there; give a checkout of github.com/MRzzm/DINet")
    sys.path.insert(0, str(path.parent.parent))
    if importlib.util.find_spec("sync_batchnorm") is None:
        shim = types.ModuleType("sync_batchnorm")
        shim.SynchronizedBatchNorm1d, shim.SynchronizedBatchNorm2d = nn.BatchNorm1d, nn.BatchNorm2d
        sys.modules["sync_batchnorm"] = shim
    spec = importlib.util.spec_from_file_location("dinet_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DINet


class DinetGenerator(nn.Module):
    """DINet's generator behind julnet's generator interface, so that julnet's training step can train it."""

    def __init__(self, dinet: nn.Module):
        super().__init__()
        self.dinet = dinet

    def forward(self, source: Tensor, references: Tensor, audio: Tensor) -> GeneratorOutput:
        return GeneratorOutput(self.dinet(source, references, audio), None)  # type: ignore[arg-type]  # no features


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Warm-up rounds, then `repeats` timed rounds; each round runs every variant once, the order rotating."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name].append(timed(variants[name]))
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times)}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def forward_gflops(model: nn.Module, *inputs: Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(*inputs)
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dinet", type=Path, required=True, help="a checkout of github.com/MRzzm/DINet")
    p.add_argument("--config", default="paper", help="julnet preset whose widths, references and crop are used")
    p.add_argument("--size", default="416x320", help="HEIGHTxWIDTH of the face crop")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = (int(v) for v in args.size.split("x"))
    cfg = load_config(args.config, list(RANDOM_WEIGHTS))
    refs, dim, window = cfg.generator.num_references, cfg.audio.dim, cfg.audio.window

    dinet_class = load_dinet(args.dinet)
    dinet = dinet_class(3, 3 * refs, dim)
    talking = build_talking_face(cfg)
    source, target = torch.rand(args.batch, 3, height, width), torch.rand(args.batch, 3, height, width)
    references, audio = torch.rand(args.batch, 3 * refs, height, width), torch.randn(args.batch, dim, window)
    inputs = (source, references, audio)

    def train_dinet() -> None:
        (dinet(*inputs) - target).abs().mean().backward()
        dinet.zero_grad(set_to_none=True)

    def train_generator() -> None:
        (talking.generator(*inputs).image - target).abs().mean().backward()
        talking.zero_grad(set_to_none=True)

    def train_with_uncertainty() -> None:
        out = talking(*inputs)
        uncertainty_loss(out.generated.image, target, out.uncertainty, cfg.un, cfg.hist)["un"].backward()
        talking.zero_grad(set_to_none=True)

    def infer(model: nn.Module) -> Callable[[], Any]:
        def run() -> None:
            with torch.inference_mode():
                model(*inputs)
        return run

    machine = machine_info(torch.device("cpu"))
    print(f"machine: {machine['cpu_model']} ({machine['cpu_cores']} cores, {machine['torch_threads']} torch threads); "
          f"torch {machine['torch']}; {height}x{width}, batch {args.batch}, {refs} references", flush=True)
    params = {"dinet": sum(t.numel() for t in dinet.parameters()), "julnet_generator": sum(t.numel() for t in talking.generator.parameters()),
              "julnet_uncertainty": sum(t.numel() for t in talking.uncertainty.parameters())}
    gflops = {"dinet": forward_gflops(dinet.eval(), *inputs), "julnet": forward_gflops(talking.eval(), *inputs)}
    dinet.train(), talking.train()
    print(f"parameters: DINet {params['dinet'] / 1e6:.2f} M, julnet generator {params['julnet_generator'] / 1e6:.2f} M "
          f"+ uncertainty {params['julnet_uncertainty'] / 1e6:.3f} M; forward GFLOPs DINet {gflops['dinet']:.1f}, "
          f"julnet {gflops['julnet']:.1f}", flush=True)

    train = rounds({"dinet": train_dinet, "julnet_generator": train_generator, "julnet_with_uncertainty": train_with_uncertainty},
                   args.repeats, args.warmup)
    dinet.eval(), talking.eval()
    infer_times = rounds({"dinet": infer(dinet), "julnet_with_uncertainty": infer(talking), "julnet_folded": infer(fold_batch_norm(talking))},
                         args.repeats, args.warmup)

    stage = check.pick_stage(cfg, "frame").model_copy(update={"height": height, "width": width, "batch_size": args.batch})
    cpu = torch.device("cpu")
    batch = check.make_batch(cfg, stage, args.batch, cpu)
    steps = {"dinet": check.Trainer(cfg, cpu, uncertainty=False, generator=DinetGenerator(dinet_class(3, 3 * refs, dim))),
             "julnet_full": check.Trainer(cfg, cpu, uncertainty=True), "julnet_no_uncertainty": check.Trainer(cfg, cpu, uncertainty=False)}
    step_times = rounds({name: (lambda t=trainer: t(batch, "frame")) for name, trainer in steps.items()}, args.repeats, args.warmup)
    step_gflops = {name: check.count_flops(trainer, batch, "frame") / 1e9 for name, trainer in steps.items()}

    result: dict[str, Any] = {"train": {k: summary(v) for k, v in train.items()}, "inference": {k: summary(v) for k, v in infer_times.items()},
                              "step": {k: summary(v) | {"gflop": step_gflops[k]} for k, v in step_times.items()}}
    base_train, base_infer, base_step = (result[part]["dinet"]["median_s"] for part in ("train", "inference", "step"))
    result["ratios"] = {
        "train_generator": result["train"]["julnet_generator"]["median_s"] / base_train,
        "train_with_uncertainty": result["train"]["julnet_with_uncertainty"]["median_s"] / base_train,
        "inference_with_uncertainty": result["inference"]["julnet_with_uncertainty"]["median_s"] / base_infer,
        "inference_folded": result["inference"]["julnet_folded"]["median_s"] / base_infer,
        "step_full": result["step"]["julnet_full"]["median_s"] / base_step,
        "step_no_uncertainty": result["step"]["julnet_no_uncertainty"]["median_s"] / base_step,
    }
    # Per-round ratios pair each julnet time with DINet's from the same round, so a slow spell of the machine that
    # hits a whole round cancels out; their median is the steadier figure when the medians' ranges overlap.
    result["round_ratios"] = {part: {name: spread([t / d for t, d in zip(times[name], times["dinet"])]) for name in times if name != "dinet"}
                              for part, times in (("train", train), ("inference", infer_times), ("step", step_times))}
    for label, part in (("forward + backward", "train"), ("inference", "inference"), ("training step", "step")):
        rows = result[part]
        for name, row in rows.items():
            ratio = row["median_s"] / rows["dinet"]["median_s"]
            paired = result["round_ratios"][part].get(name)
            per_round = f"; per round {paired['median']:.3f} [{paired['min']:.3f}..{paired['max']:.3f}]" if paired else ""
            print(f"{label:18s} {name:24s} {row['median_s']:8.3f} s [{row['min_s']:.3f}..{row['max_s']:.3f}]  ratio {ratio:.3f}{per_round}",
                  flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "settings": vars(args) | {"dinet": str(args.dinet), "json": str(args.json)},
                                         "parameters": params, "forward_gflops": gflops, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
