"""Frames per second of `julnet generate` (julnet.inference.dub) at 416x320 crops, tiny and paper presets.

Dubs a GRID sample clip with its own audio, cut to --seconds. The networks have RANDOM weights (built from
the preset, seeded; no checkpoint needed), which costs exactly what trained ones do; the output labels say
so. Pass --model DIR to time a trained checkpoint instead (it is run at --height x --width as well).

Two figures per preset:
- generate frames/s: the generation pass (reference crops, audio features, crop, generator + uncertainty
  module, paste-back, H.264 encoding), i.e. everything after the per-video landmark pass;
- end-to-end frames/s: the whole call, including dlib landmarks on every source frame and model setup.

    python benchmarks/generate_fps.py [--presets tiny paper] [--seconds 2] [--device cpu] [--batch-frames 16]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from julnet.config import load_config  # noqa: E402
from julnet.data.video import read_audio  # noqa: E402
from julnet.inference import dub, load_model  # noqa: E402
from julnet.models.generator import Generator  # noqa: E402
from julnet.training.build import build_uncertainty  # noqa: E402

VIDEO = ROOT / "tests" / "data" / "bbaf2n.mpg"


def random_model(preset: str, device: str):
    cfg = load_config(preset)
    torch.manual_seed(0)
    generator = Generator(cfg)
    uncertainty = build_uncertainty(cfg, generator.feature_channels)
    return cfg, generator.to(device).eval(), uncertainty.to(device).eval()


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
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}")
    with tempfile.TemporaryDirectory(prefix="julnet-bench-") as tmp:
        speech = Path(tmp) / "speech.wav"
        samples = read_audio(args.video, 16000)[: round(args.seconds * 16000)]
        with wave.open(str(speech), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        runs = [(f"checkpoint {args.model}", lambda: load_model(args.model, args.device))] if args.model else [
            (f"{p} (random weights)", lambda p=p: random_model(p, args.device)) for p in args.presets
        ]
        for label, build in runs:
            model = build()
            start = time.perf_counter()
            result = dub(
                args.video, speech, model, Path(tmp) / "out.mp4", device=args.device,
                batch_frames=args.batch_frames, resolution=(args.height, args.width),
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
