"""One GPU check of JULNet's training step and model-only inference, sized to end inside --budget-s.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_check.py [--device cuda] [--preset paper] [--repeats 10]
        [--max-batch 32] [--budget-s 300] [--json OUT.json]

What it measures, on synthetic faces (julnet.data.synthetic) resident on the device:
1. The machine: CPU model and cores, GPU name and memory, torch / CUDA / cuDNN versions.
2. The training step exactly as training runs it: julnet.training.step.TrainStep (both discriminators' updates,
   then generator + uncertainty module with every loss and the optimiser steps, with whatever mixed precision
   TrainStep uses on this device: train.precision, channels_last, fused Adam), at the preset's largest frame stage and largest clip stage. Batch 1, then
   doubling up to --max-batch until CUDA runs out of memory or the part's time share runs out; the largest that
   ran is timed. Seconds per step (median, min, max over the repeats after warm-up), samples/s (frames in the
   frame stage, clips in the clip stage) and frames/s; achieved TFLOP/s from torch's FlopCounterMode (it counts
   matmuls and convolutions, forward and backward, not element-wise work) and MFU against --peak-tflops.
3. The uncertainty overhead: the same step on a second set of networks whose uncertainty module is a
   parameter-free stub and whose L_un is absent, interleaved step by step with the full one (alternating
   which goes first). Only this script patches julnet.training.step.uncertainty_loss, and only during the
   stubbed variant's steps; the step logic itself is TrainStep's.
4. Inference: generator + uncertainty module forward in inference_mode, fp32 with the batch norms folded, as
   `julnet generate` runs it (and, for comparison, under fp16 autocast), at --infer-batches (default 1 and 16): model-only frames/s.
5. On CUDA, as time allows (frame stage, batch 1 and the largest): host syncs per training step (torch's sync
   debug mode); one profiled step (GPU kernel time by kind and by kernel, how busy the GPU is over an unprofiled
   step, and which convolutions fall back to cuDNN's generic kernels); and the largest batch again with
   cudnn.benchmark=True (the library leaves it off).

Pretrained VGG-19 and SyncNet weights are not needed: the script sets the config's explicit
perceptual.vgg.allow_random_init and syncnet.weights.allow_random_init. Random weights cost exactly what
trained ones do, so the timings hold; the loss values are meaningless.

The script imports torch and julnet's config, data.synthetic, models, losses and training.{build,step} only:
not Ray, MLflow, dlib or PyAV. (julnet.models.build imports julnet.pretrained, which imports julnet.storage,
which imports boto3 and pyarrow at module level; those must be installed.) Progress goes to stdout; the JSON,
rewritten after every part, holds every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from julnet.config import Config, StageConfig, load_config  # noqa: E402
from julnet.data.synthetic import SyntheticFaces  # noqa: E402
from julnet.models.blocks import fold_batch_norm  # noqa: E402
from julnet.training import step as step_module  # noqa: E402
from julnet.models.build import bare, build_models, build_optimizers  # noqa: E402
from julnet.training.step import TrainStep  # noqa: E402

FORBIDDEN = ("ray", "mlflow", "dlib", "av")
RANDOM_WEIGHTS = ("perceptual.vgg.allow_random_init=true", "syncnet.weights.allow_random_init=true")
# Dense (no sparsity) fp16/bf16 tensor-core peak of the SXM parts, from NVIDIA's datasheets.
DATASHEET_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {message}", flush=True)


class OutOfMemory(Exception):
    pass


def failed(what: str, exc: BaseException) -> str:
    """Print a part's traceback and return a one-line note of it."""
    traceback.print_exc()
    line = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    say(f"ERROR {line}")
    return line


# --------------------------------------------------------------------------------------------- machine


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device.type,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu_name=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_sms=props.multi_processor_count,
            gpu_capability=f"{props.major}.{props.minor}",
        )
        with contextlib.suppress(Exception):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
            )
            info["gpu_driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return info


def matmul_ceiling(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """TFLOP/s of an n^3 fp16 matrix product on random data: the ceiling this GPU reaches in practice."""
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


# --------------------------------------------------------------------------------------------- the step


class NoUncertainty(nn.Module):
    """Stands in for the uncertainty module when it is switched off: no parameters, no work."""

    def forward(self, image: Tensor, features: Tensor | None = None) -> None:
        return None


def _no_uncertainty_loss(*args: Any, **kwargs: Any) -> dict[str, Tensor]:
    return {}  # total_loss counts a missing part as 0


class Trainer:
    """One set of networks + optimizers + TrainStep; `uncertainty=False` stubs the module and L_un out, and
    `generator` (returning GeneratorOutput) stands in for julnet's: dinet_ratio.py times DINet's in this step."""

    def __init__(self, cfg: Config, device: torch.device, uncertainty: bool, generator: nn.Module | None = None):
        self.cfg, self.device, self.uncertainty = cfg, device, uncertainty
        self.models = build_models(cfg, device)
        if generator is not None:
            self.models.talking_face.generator = generator.to(device)
        if not uncertainty:
            self.models.talking_face.uncertainty = NoUncertainty().to(device)
        self.optimizers = build_optimizers(cfg, self.models)
        self.models.train()
        self.reset()

    def reset(self) -> None:
        """A fresh TrainStep (and GradScaler), e.g. after an out-of-memory error left one half-stepped."""
        for optimizer in self.optimizers.all().values():
            optimizer.zero_grad(set_to_none=True)
        self.step = TrainStep(self.cfg, self.models, self.optimizers, self.device)

    @contextlib.contextmanager
    def _patched(self) -> Iterator[None]:
        if self.uncertainty:
            yield
            return
        saved = step_module.uncertainty_loss
        step_module.uncertainty_loss = _no_uncertainty_loss
        try:
            yield
        finally:
            step_module.uncertainty_loss = saved

    def __call__(self, batch: dict[str, Tensor], kind: str) -> dict[str, Any]:
        """One step as the training loops run it: metrics left on the device (read once per log_every there)."""
        try:
            with self._patched():
                return self.step.run(batch, kind)
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfMemory(str(exc).splitlines()[0]) from None
        except RuntimeError as exc:
            if "out of memory" not in str(exc).lower():
                raise
            raise OutOfMemory(str(exc).splitlines()[0]) from None

    def precision(self) -> str:
        return self.step.precision


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_batch(cfg: Config, stage: StageConfig, batch_size: int, device: torch.device) -> dict[str, Tensor]:
    """A synthetic batch of `batch_size` examples (one painted example, repeated), on the device."""
    one = SyntheticFaces(cfg, stage.model_copy(update={"batch_size": 1})).batch(0)
    return {k: v.to(device).repeat(batch_size, *[1] * (v.dim() - 1)).contiguous() for k, v in one.items()}


def count_flops(trainer: Trainer, batch: dict[str, Tensor], kind: str) -> float:
    """FLOPs of one whole training step (a real step, counted by FlopCounterMode: matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter:
        trainer(batch, kind)
    return float(counter.get_total_flops())


def save_report(out: Path | None, argv: list[str] | None, machine: dict[str, Any], **parts: Any) -> dict[str, Any]:
    """A benchmark's figures with the command that made them, the date and the machine; written as JSON to `out` if given."""
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine,
        **parts,
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        say(f"figures in {out}")
    return report


def spread(times: list[float]) -> dict[str, Any]:
    return {
        "s_per_step_median": statistics.median(times),
        "s_per_step_min": min(times),
        "s_per_step_max": max(times),
        "s_per_step_stdev": statistics.stdev(times) if len(times) > 1 else 0.0,
        "repeats": len(times),
    }


class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def until(self, share: float) -> float:
        """Seconds left until `share` of the whole budget has passed (parts inherit earlier parts' savings)."""
        return self.seconds * share - self.elapsed()


def interleaved(
    full: Trainer, off: Trainer | None, batch: dict[str, Tensor], kind: str, repeats: int, warmup: int, seconds: float
) -> tuple[list[float], list[float]]:
    """Warm-up, then `repeats` timed steps of each variant, alternating which goes first; fewer if `seconds` is short."""
    device = full.device
    variants = [v for v in (full, off) if v is not None]
    first: list[float] = []
    for _ in range(warmup):
        first = [timed(lambda v=v: v(batch, kind), device) for v in variants]
    per_round = sum(first) if first else 0.0
    if per_round > 0 and repeats > 1:
        repeats = max(min(3, repeats), min(repeats, int(seconds / per_round)))
    times: dict[int, list[float]] = {0: [], 1: []}
    for i in range(repeats):
        order = list(enumerate(variants))
        if i % 2:
            order.reverse()
        for index, v in order:
            times[index].append(timed(lambda v=v: v(batch, kind), device))
    return times[0], times[1]


def figures(
    times: list[float], batch_size: int, clip_len: int, flops: float | None, peak: float | None
) -> dict[str, Any]:
    out = spread(times)
    s = out["s_per_step_median"]
    out["samples_per_s"] = batch_size / s
    out["frames_per_s"] = batch_size * clip_len / s
    if flops is not None:
        out["gflop_per_step"] = flops / 1e9
        out["tflops"] = flops / s / 1e12
        out["mfu"] = out["tflops"] / peak if peak else None
    return out


def measure_step(
    full: Trainer, off: Trainer, batch: dict[str, Tensor], kind: str, repeats: int, warmup: int, seconds: float, peak: float | None
) -> dict[str, Any]:
    """The full step and the no-uncertainty step, interleaved, with FLOP counts: one row of figures.

    The one implementation of the training-step measurement (this script's parts and benchmarks/train_step.py)."""
    device = full.device
    batch_size = next(iter(batch.values())).shape[0]
    clip_len = full.cfg.audio.window if kind == "clip" else 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_full, t_off = interleaved(full, off, batch, kind, repeats, warmup, seconds)
    flops_full = count_flops(full, batch, kind)
    flops_off = count_flops(off, batch, kind)
    row = {"batch": batch_size, "frames_per_step": batch_size * clip_len, **figures(t_full, batch_size, clip_len, flops_full, peak)}
    row["no_uncertainty"] = figures(t_off, batch_size, clip_len, flops_off, peak)
    row["un_overhead_ratio"] = row["s_per_step_median"] / row["no_uncertainty"]["s_per_step_median"]
    row["un_flop_ratio"] = flops_full / flops_off
    if device.type == "cuda":
        row["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def describe_step(row: dict[str, Any], kind: str) -> str:
    sample = "clip" if kind == "clip" else "frame"
    return (
        f"  {kind} b={row['batch']}: {row['s_per_step_median'] * 1e3:.1f} ms/step "
        f"[{row['s_per_step_min'] * 1e3:.1f}..{row['s_per_step_max'] * 1e3:.1f}, n={row['repeats']}], "
        f"{row['samples_per_s']:.1f} {sample}s/s, {row['gflop_per_step']:.0f} GFLOP/step, "
        f"{row['tflops']:.1f} TFLOP/s"
        + (f", MFU {row['mfu'] * 100:.1f}%" if row.get("mfu") else "")
        + f"; no-uncertainty {row['no_uncertainty']['s_per_step_median'] * 1e3:.1f} ms -> ratio {row['un_overhead_ratio']:.3f}"
        + (f"; peak mem {row['max_memory_gib']:.1f} GiB" if "max_memory_gib" in row else "")
    )


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str | None]:
    """The MFU peak: --peak-tflops, else the datasheet figure of a known GPU; none on the CPU."""
    if given:
        return given, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_properties(device).name
        peak = next((v for k, v in DATASHEET_PEAK_TFLOPS.items() if k in name), None)
        if peak:
            return peak, "datasheet dense fp16/bf16 tensor-core peak (SXM)"
    return None, None


def train_part(
    kind: str,
    stage: StageConfig,
    cfg: Config,
    full: Trainer,
    off: Trainer,
    args: argparse.Namespace,
    peak: float | None,
    seconds: float,
) -> dict[str, Any]:
    """Batch 1, a doubling search for the largest batch, and the largest timed; each with the overhead ratio."""
    device = full.device
    deadline = time.perf_counter() + seconds
    clip_len = cfg.audio.window if kind == "clip" else 1
    part: dict[str, Any] = {
        "stage": stage.name,
        "height": stage.height,
        "width": stage.width,
        "clip_len": clip_len,
        "sample": "clip" if kind == "clip" else "frame",
        "results": [],
        "batch_search": [],
        "notes": [],
    }

    def measure(batch_size: int, batch: dict[str, Tensor], share: float) -> dict[str, Any]:
        left = max(deadline - time.perf_counter(), 0.0)
        row = measure_step(full, off, batch, kind, args.repeats, args.warmup, left * share, peak)
        say(describe_step(row, kind))
        return row

    say(f"{kind} stage {stage.name} ({stage.height}x{stage.width}, {clip_len} frame(s) per sample): batch 1")
    part["results"].append(measure(1, make_batch(cfg, stage, 1, device), share=0.25))

    # Doubling search: one step to warm the shape, one timed to predict the next size's cost.
    largest, largest_batch, est = 1, None, part["results"][0]["s_per_step_median"]
    size = 2
    while size <= args.max_batch:
        # the search step, the measurement's warm-up and repeats (both variants), and the FLOP counts
        need = est * 2 * (2 + 2 * (args.warmup + min(args.repeats, 3)) + 2)
        if time.perf_counter() + need > deadline:
            part["batch_search"].append({"batch": size, "result": "skipped (time)"})
            part["notes"].append(f"batch {size} not tried: the part's time share would run out (predicted {need:.0f} s)")
            say(f"  {kind} b={size}: not tried, ~{need:.0f} s would overrun this part's time share")
            break
        try:
            batch = make_batch(cfg, stage, size, device)
            full(batch, kind)
            est = timed(lambda: full(batch, kind), device)
        except OutOfMemory as exc:
            part["batch_search"].append({"batch": size, "result": "out of memory"})
            say(f"  {kind} b={size}: out of memory ({exc})")
            batch = None
            full.reset()
            free(device)
            break
        part["batch_search"].append({"batch": size, "result": "ok", "s_per_step": est})
        say(f"  {kind} b={size}: ok, {est * 1e3:.1f} ms/step (one step)")
        largest, largest_batch = size, batch
        batch = None
        est *= 2
        size *= 2
    else:
        part["notes"].append(f"stopped at --max-batch {args.max_batch}")
    part["largest_batch"] = largest
    if largest_batch is not None:
        free(device)
        try:
            part["results"].append(measure(largest, largest_batch, share=0.9))
        except OutOfMemory as exc:  # two variants' caches side by side can need more than one alone
            part["notes"].append(f"batch {largest}: out of memory while timing ({exc})")
            full.reset(), off.reset()
    del largest_batch
    free(device)
    return part


# --------------------------------------------------------------------------------------------- inference


def inference_part(cfg: Config, full: Trainer, args: argparse.Namespace, stage: StageConfig, seconds: float) -> dict[str, Any]:
    """Generator + uncertainty module forward in inference_mode, batch norms folded as `julnet generate` runs it:
    model-only frames/s."""
    device = full.device
    face = fold_batch_norm(bare(full.models.talking_face))
    precisions = ["fp32"] + (["fp16 autocast"] if device.type == "cuda" else [])
    part: dict[str, Any] = {"height": stage.height, "width": stage.width, "results": []}
    deadline = time.perf_counter() + seconds

    def forward(batch: dict[str, Tensor], autocast: bool) -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=autocast):
            face(batch["source"], batch["references"], batch["audio"])

    try:
        for size in args.infer_batches:
            batch = make_batch(cfg, stage, size, device)
            for precision in precisions:
                left = deadline - time.perf_counter()
                if left <= 0:
                    part.setdefault("skipped", []).append(f"b={size} {precision}: time share used up")
                    continue
                autocast = precision != "fp32"
                first = [timed(lambda: forward(batch, autocast), device) for _ in range(max(args.warmup, 1))][-1]
                repeats = max(1, min(args.repeats * 2, int(left * 0.5 / max(first, 1e-6))))
                times = [timed(lambda: forward(batch, autocast), device) for _ in range(repeats)]
                row = {"batch": size, "precision": precision, **spread(times)}
                row["s_per_forward_median"] = row.pop("s_per_step_median")
                row["frames_per_s"] = size / row["s_per_forward_median"]
                part["results"].append(row)
                say(f"  inference b={size} {precision}: {row['s_per_forward_median'] * 1e3:.2f} ms, {row['frames_per_s']:.1f} frames/s (n={repeats})")
            del batch
    finally:
        del face
        free(device)
    return part


# --------------------------------------------------------------------------------------------- CUDA-only looks


def host_syncs(trainer: Trainer, batch: dict[str, Tensor], kind: str) -> int:
    """How many times one training step makes the host wait for the GPU (torch's sync debug mode)."""
    trainer(batch, kind)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer(batch, kind)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


KERNEL_KINDS = (  # (category, substrings of a lower-cased kernel name), first match wins
    ("layout NCHW<->NHWC", ("nchwtonhwc", "nhwctonchw")),
    ("batch norm", ("bn_fw", "bn_bw", "batch_norm", "batchnorm")),
    ("avg_pool", ("avg_pool",)),
    ("grid_sample", ("grid_sampler",)),
    ("optimizer", ("adam", "foreach", "multi_tensor", "amp_")),
    ("conv/gemm", ("conv", "xmma", "cutlass", "gemm", "wgrad", "dgrad", "fprop")),
    ("memcpy/memset", ("memcpy", "memset")),
    ("reduction", ("reduce",)),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def summarize_kernels(kernels: list[tuple[str, float, float]], wall: float, step_s: float | None, top: int = 15) -> dict[str, Any]:
    """(name, start_us, end_us) of every GPU kernel/copy in one step -> busy time, categories, top kernels."""
    busy_us, last_end = 0.0, float("-inf")
    for _, start, end in sorted(kernels, key=lambda k: k[1]):  # union of intervals: streams may overlap
        if end > last_end:
            busy_us += end - max(start, last_end)
            last_end = end
    total_us = sum(end - start for _, start, end in kernels) or 1.0
    by_name: dict[str, list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    for name, start, end in kernels:
        for key, table in ((name, by_name), (kernel_kind(name), by_kind)):
            row = table.setdefault(key, [0.0, 0])
            row[0] += end - start
            row[1] += 1
    busy = busy_us / 1e6

    def rows(table: dict[str, list[float]], limit: int) -> list[dict[str, Any]]:
        ranked = sorted(table.items(), key=lambda kv: kv[1][0], reverse=True)[:limit]
        return [{"name": k[:120], "gpu_ms": v[0] / 1e3, "share": v[0] / total_us, "calls": int(v[1])} for k, v in ranked]

    return {
        "wall_s_profiled": wall,
        "gpu_busy_s": busy,
        "gpu_busy_share_profiled": busy / wall if wall else None,
        "step_s_unprofiled": step_s,
        "gpu_busy_share_unprofiled": busy / step_s if step_s else None,
        "kernels": len(kernels),
        "by_kind": rows(by_kind, len(by_kind)),
        "top_kernels": rows(by_name, top),
    }


def profile_step(trainer: Trainer, batch: dict[str, Tensor], kind: str, step_s: float | None = None) -> dict[str, Any]:
    """One profiled step: every GPU kernel's time, grouped; how busy the GPU is over the (unprofiled) step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    device = trainer.device
    trainer(batch, kind)
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        wall = timed(lambda: trainer(batch, kind), device)
    events = prof.events()
    # GPU-side copies of record_function ranges (e.g. "Optimizer.step#Adam.step") span kernels: not kernels themselves.
    annotations = {e.name for e in events if e.device_type == DeviceType.CPU}
    kernels = [
        (e.name, float(e.time_range.start), float(e.time_range.end))
        for e in events
        if e.device_type == DeviceType.CUDA and e.name not in annotations
    ]
    out = summarize_kernels(kernels, wall, step_s)
    # Which convolutions fall back to cuDNN's generic (non-tensor-core) kernels, by the launching op's input shapes.
    slow: dict[str, list[float]] = {}
    with contextlib.suppress(Exception):
        for e in events:
            for k in getattr(e, "kernels", None) or []:
                if "convolve_sgemm" in k.name:
                    row = slow.setdefault(f"{e.name} {e.input_shapes[:2]}", [0.0, 0])
                    row[0] += k.duration
                    row[1] += 1
    out["generic_conv_kernels"] = [
        {"op_and_shapes": key, "gpu_ms": v[0] / 1e3, "calls": int(v[1])}
        for key, v in sorted(slow.items(), key=lambda kv: kv[1][0], reverse=True)[:12]
    ]
    return out


# --------------------------------------------------------------------------------------------- main


def pick_stage(cfg: Config, kind: str) -> StageConfig | None:
    stages = [s for s in cfg.train.stages if s.kind == kind]
    return max(stages, key=lambda s: s.height * s.width) if stages else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda when available, else cpu")
    p.add_argument("--preset", default="paper", help="preset name or YAML path (default: paper)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per variant and batch size (fewer if time is short)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--max-batch", type=int, default=32, help="cap of the doubling batch search")
    p.add_argument("--infer-batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--stages", nargs="+", choices=["frame", "clip"], default=["frame", "clip"])
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: datasheet dense fp16/bf16 of H100/H200/A100)")
    p.add_argument("--budget-s", type=float, default=300.0, help="the whole run's time; parts that would overrun are skipped with a note")
    p.add_argument("--no-extras", action="store_true", help="skip the sync count, profile and cudnn.benchmark comparison")
    p.add_argument("--json", type=Path, default=None, help="write every figure here (rewritten after each part)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    budget = Budget(args.budget_s)
    report: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    report["forbidden_imports"] = sorted(m for m in FORBIDDEN if m in sys.modules)
    skipped: list[str] = []
    errors: list[str] = []
    report["skipped"], report["errors"] = skipped, errors

    def save() -> None:
        report["total_s"] = time.perf_counter() - T0
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    report["machine"] = machine = machine_info(device)
    say(
        f"machine: {machine['cpu_model']} ({machine['cpu_cores']} cores, {machine['cpu_cores_usable']} usable); "
        + (f"GPU {machine['gpu_name']} {machine['gpu_memory_gib']} GiB, driver {machine.get('gpu_driver')}; " if device.type == "cuda" else "no GPU; ")
        + f"torch {machine['torch']}, CUDA {machine['cuda']}, cuDNN {machine['cudnn']}, Python {machine['python']}"
    )
    if report["forbidden_imports"]:
        say(f"WARNING: imported {report['forbidden_imports']}, which the GPU machine does not have")

    peak, peak_source = peak_tflops(device, args.peak_tflops)
    cfg = load_config(args.preset, [*RANDOM_WEIGHTS, *args.overrides])
    settings: dict[str, Any] = {
        "preset": cfg.name,
        "device": str(device),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "max_batch": args.max_batch,
        "budget_s": args.budget_s,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "random_weights": "VGG-19 and SyncNet on random init (allow_random_init overrides); all networks random: timings are unaffected",
        "flops_counted": "torch FlopCounterMode over one whole step: matmuls and convolutions, forward and backward",
        "batch_on_device": "synthetic faces built once and kept on the device: no data loading or host->device copy is timed",
        "uncertainty_off": "uncertainty module replaced by a parameter-free stub and L_un dropped (uncertainty_loss patched to {} for that variant only)",
        "train_precision_config": cfg.train.precision,
        "channels_last": cfg.train.channels_last and device.type == "cuda",
        "fused_adam": cfg.train.fused_adam and device.type == "cuda",
        "compile": cfg.train.compile,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    report["settings"] = settings
    if device.type == "cuda":
        say("fp16 8192^3 matmul ceiling ...")
        settings["matmul_fp16_tflops_measured"] = matmul_ceiling(device)
        say(f"  {settings['matmul_fp16_tflops_measured']:.0f} TFLOP/s measured; MFU below is against {peak} TFLOP/s ({settings['peak_source']})")
    else:
        say(f"MFU peak: {peak if peak else 'none (CPU): MFU not reported'}")
    free(device)

    say(f"building networks ({cfg.name} preset, random weights: VGG-19/SyncNet via allow_random_init) x2 (full, no uncertainty) ...")
    full = Trainer(cfg, device, uncertainty=True)
    off = Trainer(cfg, device, uncertainty=False)
    settings["precision"] = full.precision()
    settings["params"] = {name: sum(p.numel() for p in m.parameters()) for name, m in full.models.trained().items()}
    say(f"  training step precision: {settings['precision']} (train.precision={cfg.train.precision}); cudnn.benchmark={settings['cudnn_benchmark']}")
    save()

    # Shares of the whole budget by which each part must end (a part inherits what earlier parts left).
    extras = device.type == "cuda" and not args.no_extras
    ends = {"frame": 0.36, "clip": 0.72, "inference": 0.82 if extras else 1.0}
    report["train"] = {}
    for kind in args.stages:
        stage = pick_stage(cfg, kind)
        if stage is None:
            skipped.append(f"{kind}: the preset has no {kind} stage")
            continue
        seconds = budget.until(ends[kind])
        if seconds <= 0:
            skipped.append(f"{kind} stage: no time left in the budget")
            say(f"{kind} stage skipped: no time left")
            continue
        try:
            report["train"][kind] = train_part(kind, stage, cfg, full, off, args, peak, seconds)
        except Exception as exc:  # one broken part must not cost the others (a GPU run is one shot)
            errors.append(failed(f"train {kind}", exc))
            full.reset(), off.reset(), free(device)
        save()

    frame_stage = pick_stage(cfg, "frame") or cfg.train.stages[-1]
    seconds = budget.until(ends["inference"])
    if seconds > 0:
        say(f"inference: generator + uncertainty forward at {frame_stage.height}x{frame_stage.width}, batches {args.infer_batches}")
        try:
            report["inference"] = inference_part(cfg, full, args, frame_stage, seconds)
        except Exception as exc:
            errors.append(failed("inference", exc))
            free(device)
    else:
        skipped.append("inference: no time left in the budget")
    save()

    if extras:
        report["extras"] = extra = {}
        frame = report["train"].get("frame")
        kind, size = "frame", (frame or {}).get("largest_batch", 1)
        medians = {r["batch"]: r["s_per_step_median"] for r in (frame or {}).get("results", [])}
        try:
            batch = make_batch(cfg, frame_stage, size, device)
            for what, fn in (
                ("host_syncs_per_step", lambda: host_syncs(full, batch, kind)),
                ("profile_b1", lambda: profile_step(full, make_batch(cfg, frame_stage, 1, device), kind, medians.get(1))),
                (f"profile_b{size}", lambda: profile_step(full, batch, kind, medians.get(size))),
            ):
                if budget.until(0.93) <= 0:
                    skipped.append(f"extras: {what}: no time left")
                    continue
                say(f"extra: {what} (frame stage) ...")
                try:
                    extra[what] = fn()
                except Exception as exc:
                    errors.append(failed(f"extra {what}", exc))
                    torch.cuda.set_sync_debug_mode("default")
                    full.reset()
                    continue
                if what.startswith("profile"):
                    pr = extra[what]
                    step = pr["step_s_unprofiled"] or pr["wall_s_profiled"]
                    say(f"  {pr['kernels']} kernels, GPU busy {pr['gpu_busy_s'] * 1e3:.1f} ms of a {step * 1e3:.1f} ms step ({pr['gpu_busy_s'] / step * 100:.0f}%; profiled step {pr['wall_s_profiled'] * 1e3:.1f} ms)")
                    for row in pr["by_kind"]:
                        say(f"    {row['gpu_ms']:8.2f} ms  {row['share'] * 100:5.1f}%  x{row['calls']:<5d} {row['name']}")
                    for row in pr["top_kernels"][:6]:
                        say(f"    {row['gpu_ms']:8.2f} ms  {row['share'] * 100:5.1f}%  x{row['calls']:<5d} {row['name'][:90]}")
                    for row in pr["generic_conv_kernels"][:6]:
                        say(f"    generic conv kernel {row['gpu_ms']:7.2f} ms x{row['calls']:<3d} {row['op_and_shapes'][:110]}")
                else:
                    say(f"  {extra[what]}")
                save()
            left = budget.until(1.0)
            timed_rows = [r for r in (frame or {}).get("results", []) if r["batch"] == size]
            if left > 0 and timed_rows:
                say(f"extra: frame b={size} with cudnn.benchmark=True (library default {settings['cudnn_benchmark']}) ...")
                torch.backends.cudnn.benchmark = True
                try:
                    base = timed_rows[-1]["s_per_step_median"]
                    t_bench, _ = interleaved(full, None, batch, kind, args.repeats, args.warmup + 2, left * 0.6)
                    extra["cudnn_benchmark"] = {"batch": size, **spread(t_bench), "speedup_vs_default": base / statistics.median(t_bench)}
                    say(f"  {statistics.median(t_bench) * 1e3:.1f} ms/step vs {base * 1e3:.1f} -> x{extra['cudnn_benchmark']['speedup_vs_default']:.2f}")
                finally:
                    torch.backends.cudnn.benchmark = False
            else:
                skipped.append("extras: cudnn.benchmark comparison: no time left")
        except Exception as exc:
            errors.append(failed("extras", exc))
            full.reset()
        save()

    report["grad_scale_final"] = full.step.scaler.get_scale() if full.step.scaler.is_enabled() else None
    for note in skipped:
        say(f"skipped: {note}")
    for error in errors:
        say(f"ERROR: {error}")
    save()
    say(f"done in {time.perf_counter() - T0:.0f} s" + (f"; figures in {args.json}" if args.json else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
