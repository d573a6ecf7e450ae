"""Frames per second of `julnet generate` (julnet.inference.dub) at 416x320 crops, tiny and paper presets.

Dubs a GRID sample clip with its own audio, cut to --seconds. The networks have RANDOM weights (built from
the preset, seeded; no checkpoint needed), which costs exactly what trained ones do; the output labels say
so. Pass --model DIR to time a trained checkpoint instead (it is run at --height x --width as well).

Three figures per preset and epistemic sample count K (--epistemic-samples, default 0 4 8: generate.epistemic_samples,
K - 1 extra generator passes per frame, and the epistemic heat-map video written when K > 0), each the median
[min..max] of --repeats dubs after --warmup untimed ones:
- model-only frames/s: inside the generator and the uncertainty module (batches of --batch-frames frames,
  inputs to the device and outputs back included): the report's model_fps;
- generate frames/s: the generation pass (reference crops, audio features, crop, networks, paste-back,
  H.264 encoding; decoding and encoding overlap the networks on their own threads), i.e. everything after
  the per-video landmark pass;
- end-to-end frames/s: the whole `julnet generate` call, including dlib landmarks on every source frame.

With --actors N [N ...], it reports instead batch inference throughput (julnet.batch.run_batch, as
`julnet generate --manifest`): --pairs copies of the clip dubbed on N Ray Data actors of --cpus-per-actor
CPUs each, from a checkpoint of the preset with random weights, on a local Ray started by the script and
bound to 127.0.0.1. Frames/s is all frames over the wall time of the run, actor start-up and model loading
included; after --warmup untimed one-pair runs, --repeats runs per actor count.
--json PATH writes the figures and the machine (CPU model, cores, GPU, torch) there.

With --memory, it reports instead the peak RSS of a whole `dub` process (tiny preset) on synthetic 1080p
inputs: the GRID face scaled 3x on a 1920x1080 canvas, H.264 with a keyframe every 2 s. Four runs: video and
audio --long-seconds long, then twice as long (both streamed forward), then a --short-seconds video looped
ping-pong under the longer audio (backward sweeps read by seeking), then the first again writing the sigma
heat-map video too (--uncertainty-video: a second H.264 encoder and a heat-map frame per output frame).
Bounded memory means the peaks do not grow with the length, and stay far below what holding every frame
would take (also printed).

    python benchmarks/generate_fps.py [--presets tiny paper] [--seconds 2] [--device cpu] [--batch-frames 16] \
        [--repeats 3] [--warmup 1] [--epistemic-samples 0 4 8] [--json OUT.json]
    python benchmarks/generate_fps.py --actors 1 2 [--presets tiny] [--pairs 4] [--cpus-per-actor 1]
    python benchmarks/generate_fps.py --memory [--short-seconds 4] [--long-seconds 12]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
# Ray reads this when first imported: the local cluster of --actors then binds to 127.0.0.1 only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gpu_check import machine_info  # noqa: E402
from julnet.config import load_config  # noqa: E402
from julnet.data.video import read_audio, read_frames  # noqa: E402
from julnet.inference import dub, load_model  # noqa: E402
from julnet.models.talking_face import build_talking_face  # noqa: E402

VIDEO = ROOT / "tests" / "data" / "bbaf2n.mpg"


def random_model(preset: str, device: str):
    cfg = load_config(preset)
    torch.manual_seed(0)
    return cfg, build_talking_face(cfg).to(device).eval()


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def write_1080p(path: Path, source: Path, seconds: float) -> int:
    """A 1920x1080 H.264 video of the source's frames (scaled 3x, looped back and forth); returns its frame count."""
    frames = read_frames(source)
    order = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
    count = round(seconds * 25)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "23", "g": "50"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        canvas = np.full((1080, 1920, 3), 90, np.uint8)
        for i in range(count):
            canvas[108:972, 420:1500] = cv2.resize(frames[order[i % len(order)]], (1080, 864), interpolation=cv2.INTER_LINEAR)
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return count


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of a dub process on synthetic 1080p inputs: long, twice as long, and a short video looped."""
    speech = read_audio(args.video, 16000)
    with tempfile.TemporaryDirectory(prefix="julnet-bench-") as tmp:
        root = Path(tmp)
        for name, seconds in (("short", args.short_seconds), ("long", args.long_seconds), ("longer", 2 * args.long_seconds)):
            write_1080p(root / f"{name}.mp4", Path(args.video), seconds)
            write_wav(root / f"{name}.wav", np.resize(speech, round(seconds * 16000)))
        for video, audio, sigma in (("long", "long", False), ("longer", "longer", False), ("short", "longer", False), ("long", "long", True)):
            cmd = [sys.executable, __file__, "--dub-child", str(root / f"{video}.mp4"), str(root / f"{audio}.wav"), str(root / "out.mp4"),
                   "--batch-frames", str(args.batch_frames)] + (["--dub-child-sigma"] if sigma else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            output = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                raise SystemExit(f"dub child failed ({proc.returncode})")
            s = json.loads(output.strip().splitlines()[-1])
            held = s["frames"] * 1920 * 1080 * 3 / 2**30
            shape = " (ping-pong)" if s["looped"] else " + sigma video" if sigma else ""
            print(
                f"1080p video {video:6s} ({s['source_frames']:4d} frames), audio {audio:6s}: {s['frames']:4d} output frames"
                f"{shape:14s} | peak RSS {usage.ru_maxrss / 1024:5.0f} MiB"
                f" | all frames in memory would be {held:4.1f} GiB | {s['seconds']:.0f} s, generate {s['generate_fps']:.1f} frames/s",
                flush=True,
            )


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and standard deviation of repeated figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}


def shown(figure: dict[str, float]) -> str:
    return f"{figure['median']:.2f} [{figure['min']:.2f}..{figure['max']:.2f}]"


def speed(args: argparse.Namespace, tmp: Path, speech: Path) -> list[dict]:
    """Model-only, generate and end-to-end frames/s of `dub` per preset (or --model) and epistemic sample count K:
    median and spread of --repeats."""
    runs = [(f"checkpoint {args.model}", lambda: load_model(args.model, args.device))] if args.model else [
        (f"{p} (random weights)", lambda p=p: random_model(p, args.device)) for p in args.presets
    ]
    rows = []
    for (label, build), k in itertools.product(runs, args.epistemic_samples):
        model = build()
        summaries = []
        for i in range(args.warmup + args.repeats):
            result = dub(
                args.video, speech, model, tmp / "out.mp4", device=args.device, epistemic_video=tmp / "epistemic.mp4" if k else None,
                overrides=[f"generate.batch_frames={args.batch_frames}", f"generate.epistemic_samples={k}"], resolution=(args.height, args.width),
                overwrite=True,  # every repeat writes the same scratch files
            )
            if i >= args.warmup:
                summaries.append(result["summary"])
        s = summaries[-1]
        row = {"model": label, "epistemic_samples": k, "frames": s["frames"], "codecs": s["codecs"]}
        row.update({key: spread([x[key] for x in summaries]) for key in ("model_fps", "generate_fps", "end_to_end_fps")})
        rows.append(row)
        print(
            f"{label:28s} {args.height}x{args.width} K={k}: {s['frames']} frames | model-only {shown(row['model_fps'])} frames/s"
            f" | generate {shown(row['generate_fps'])} | end-to-end {shown(row['end_to_end_fps'])} | codecs {'+'.join(s['codecs'])}",
            flush=True,
        )
    return rows


def random_checkpoint(preset: str, root: Path) -> Path:
    """A checkpoint of the preset with random weights (seeded), saved by the project's checkpoint code."""
    from julnet.models.build import build_models, build_optimizers
    from julnet.models.checkpoint import save_checkpoint, training_state

    cfg = load_config(preset, ["train.device=cpu", "perceptual.vgg.allow_random_init=true", "syncnet.weights.allow_random_init=true"])
    torch.manual_seed(0)
    models = build_models(cfg, pretrained=False)
    state = training_state(cfg, models, build_optimizers(cfg, models), torch.amp.GradScaler("cpu", enabled=False), 0, "frame")
    return save_checkpoint(root / preset, state, keep_last=1)


def batch(args: argparse.Namespace, tmp: Path, speech: Path) -> list[dict]:
    """Batch inference throughput on 1, 2, .. Ray Data actors (julnet.batch.run_batch), per preset."""
    import ray

    from julnet.batch import run_batch

    manifest = tmp / "pairs.jsonl"
    manifest.write_text("".join(json.dumps({"video": str(Path(args.video).resolve()), "audio": str(speech), "name": f"pair{i}"}) + "\n"
                                for i in range(args.pairs)))
    warm = tmp / "warm.jsonl"
    warm.write_text(manifest.read_text().splitlines()[0] + "\n")
    os.environ.pop("RAY_ADDRESS", None)  # our own local cluster, whatever this shell points at
    ray.init(address="local", num_cpus=max(args.actors) * args.cpus_per_actor, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _temp_dir=str(Path("/tmp") / f"julnet-bench-ray-{os.getuid()}"))
    rows = []
    try:
        for preset in args.presets:
            model = str(random_checkpoint(preset, tmp / "models"))
            overrides = [f"generate.batch_frames={args.batch_frames}"]
            run = 0

            def timed(pairs: Path, actors: int) -> tuple[float, int]:
                nonlocal run
                run += 1
                start = time.perf_counter()
                result = run_batch(str(pairs), str(tmp / f"out{run}"), model, overrides=overrides, workers=actors,
                                   cpus_per_worker=args.cpus_per_actor)
                seconds = time.perf_counter() - start
                if result.failed:
                    raise SystemExit(f"batch run failed: {result.failed}")
                return seconds, sum(r["frames"] for r in result.rows)

            for _ in range(args.warmup):  # Ray workers started and imports cached, as on a running cluster
                timed(warm, 1)
            for actors in args.actors:
                times = []
                for _ in range(args.repeats):
                    seconds, frames = timed(manifest, actors)
                    times.append(frames / seconds)
                row = {"model": f"{preset} (random weights)", "actors": actors, "cpus_per_actor": args.cpus_per_actor, "pairs": args.pairs,
                       "frames": frames, "frames_per_s": spread(times)}
                rows.append(row)
                print(f"{preset:6s} batch {args.pairs} pairs ({frames} frames) on {actors} actor(s) x {args.cpus_per_actor:g} CPU:"
                      f" {shown(row['frames_per_s'])} frames/s", flush=True)
    finally:
        ray.shutdown()
    return rows


def dub_child(video: str, audio: str, out: str, batch_frames: int, sigma: bool) -> None:
    """One dub with the tiny preset (random weights), with the sigma heat-map video if asked; prints the summary as JSON."""
    sigma_video = Path(out).with_suffix(".sigma.mp4") if sigma else None
    result = dub(video, audio, random_model("tiny", "cpu"), out, uncertainty_video=sigma_video, overrides=[f"generate.batch_frames={batch_frames}"], overwrite=True)
    print(json.dumps(result["summary"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--model", default=None, help="time this checkpoint / run directory instead of random weights")
    parser.add_argument("--video", default=str(VIDEO))
    parser.add_argument("--seconds", type=float, default=2.0, help="audio length, so frames = 25 x seconds")
    parser.add_argument("--height", type=int, default=416)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--actors", type=int, nargs="+", default=None, metavar="N", help="batch inference throughput on N Ray actors")
    parser.add_argument("--pairs", type=int, default=4, help="(video, audio) pairs per batch run")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--epistemic-samples", type=int, nargs="+", default=[0, 4, 8], metavar="K", help="generate.epistemic_samples values to time")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures and the machine here")
    parser.add_argument("--memory", action="store_true", help="peak RSS on synthetic 1080p inputs instead of frames/s")
    parser.add_argument("--short-seconds", type=float, default=4.0)
    parser.add_argument("--long-seconds", type=float, default=12.0)
    parser.add_argument("--dub-child", nargs=3, metavar=("VIDEO", "AUDIO", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--dub-child-sigma", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dub_child:
        dub_child(*args.dub_child, args.batch_frames, args.dub_child_sigma)
        return
    if args.repeats < 1 or args.warmup < 0 or args.pairs < 1 or (args.actors and min(args.actors) < 1):
        parser.error("--repeats, --pairs and --actors must be at least 1, --warmup at least 0")
    machine = machine_info(torch.device(args.device))
    print(f"machine: {machine['cpu_model']} ({machine['cpu_cores']} cores, {machine['cpu_cores_usable']} usable, {machine['torch_threads']} torch threads);"
          f" {'GPU ' + machine['gpu_name'] if 'gpu_name' in machine else 'no GPU'}; torch {machine['torch']}; device {args.device}", flush=True)
    if args.memory:
        memory(args)
        return
    with tempfile.TemporaryDirectory(prefix="julnet-bench-") as tmp:
        speech = Path(tmp) / "speech.wav"
        samples = read_audio(args.video, 16000)[: round(args.seconds * 16000)]
        write_wav(speech, samples)
        kind, rows = ("batch", batch(args, Path(tmp), speech)) if args.actors else ("speed", speed(args, Path(tmp), speech))
    if args.json:
        figures = {"kind": kind, "machine": machine, "size": [args.width, args.height], "batch_frames": args.batch_frames,
                   "seconds": args.seconds, "repeats": args.repeats, "warmup": args.warmup, "runs": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        partial = args.json.with_name(f".{args.json.name}.partial")
        partial.write_text(json.dumps(figures, indent=1))
        os.replace(partial, args.json)

if __name__ == "__main__":
    main()
