"""Frames per second of `julnet generate` (julnet.inference.dub) at 416x320 crops, tiny and paper presets.

Dubs a GRID sample clip with its own audio, cut to --seconds. The networks have RANDOM weights (built from
the preset, seeded; no checkpoint needed), which costs exactly what trained ones do; the output labels say
so. Pass --model DIR to time a trained checkpoint instead (it is run at --height x --width as well).

Two figures per preset:
- generate frames/s: the generation pass (reference crops, audio features, crop, generator + uncertainty
  module, paste-back, H.264 encoding), i.e. everything after the per-video landmark pass;
- end-to-end frames/s: the whole call, including dlib landmarks on every source frame and model setup.

With --memory, it reports instead the peak RSS of a whole `dub` process (tiny preset) on synthetic 1080p
inputs: the GRID face scaled 3x on a 1920x1080 canvas, H.264 with a keyframe every 2 s. Three runs: video and
audio --long-seconds long, then twice as long (both streamed forward), then a --short-seconds video looped
ping-pong under the longer audio (backward sweeps read by seeking). Bounded memory means the peaks do not grow
with the length, and stay far below what holding every frame would take (also printed).

    python benchmarks/generate_fps.py [--presets tiny paper] [--seconds 2] [--device cpu] [--batch-frames 16]
    python benchmarks/generate_fps.py --memory [--short-seconds 4] [--long-seconds 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

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
        for video, audio in (("long", "long"), ("longer", "longer"), ("short", "longer")):
            cmd = [sys.executable, __file__, "--dub-child", str(root / f"{video}.mp4"), str(root / f"{audio}.wav"), str(root / "out.mp4"),
                   "--batch-frames", str(args.batch_frames)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            output = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                raise SystemExit(f"dub child failed ({proc.returncode})")
            s = json.loads(output.strip().splitlines()[-1])
            held = s["frames"] * 1920 * 1080 * 3 / 2**30
            print(
                f"1080p video {video:6s} ({s['source_frames']:4d} frames), audio {audio:6s}: {s['frames']:4d} output frames"
                f"{' (ping-pong)' if s['looped'] else '            '} | peak RSS {usage.ru_maxrss / 1024:5.0f} MiB"
                f" | all frames in memory would be {held:4.1f} GiB | {s['seconds']:.0f} s, generate {s['generate_fps']:.1f} frames/s",
                flush=True,
            )


def dub_child(video: str, audio: str, out: str, batch_frames: int) -> None:
    """One dub with the tiny preset (random weights); prints the summary as JSON."""
    result = dub(video, audio, random_model("tiny", "cpu"), out, overrides=[f"generate.batch_frames={batch_frames}"])
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
    parser.add_argument("--memory", action="store_true", help="peak RSS on synthetic 1080p inputs instead of frames/s")
    parser.add_argument("--short-seconds", type=float, default=4.0)
    parser.add_argument("--long-seconds", type=float, default=12.0)
    parser.add_argument("--dub-child", nargs=3, metavar=("VIDEO", "AUDIO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dub_child:
        dub_child(*args.dub_child, args.batch_frames)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, device {args.device}")
    if args.memory:
        memory(args)
        return
    with tempfile.TemporaryDirectory(prefix="julnet-bench-") as tmp:
        speech = Path(tmp) / "speech.wav"
        samples = read_audio(args.video, 16000)[: round(args.seconds * 16000)]
        write_wav(speech, samples)
        runs = [(f"checkpoint {args.model}", lambda: load_model(args.model, args.device))] if args.model else [
            (f"{p} (random weights)", lambda p=p: random_model(p, args.device)) for p in args.presets
        ]
        for label, build in runs:
            model = build()
            start = time.perf_counter()
            result = dub(
                args.video, speech, model, Path(tmp) / "out.mp4", device=args.device,
                overrides=[f"generate.batch_frames={args.batch_frames}"], resolution=(args.height, args.width),
            )
            seconds = time.perf_counter() - start
            s = result["summary"]
            print(
                f"{label:28s} {args.height}x{args.width}: {s['frames']} frames | generate {s['generate_fps']:.2f} frames/s"
                f" | end-to-end {s['frames'] / seconds:.2f} frames/s | codecs {'+'.join(s['codecs'])}",
                flush=True,
            )


if __name__ == "__main__":
    main()
