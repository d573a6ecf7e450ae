"""Frames per second of the evaluation suite (julnet.evaluation.suite.evaluate), tiny and paper presets.

Preprocesses the two GRID test clips into a temporary dataset and evaluates --frames frames of each (the
`train` split, since the timing does not care which video is held out). The generator, uncertainty module
and own SyncNet have RANDOM weights (seeded), which cost exactly what trained ones do; the numbers they
give are meaningless and not printed. LPIPS and FID are unavailable here (no weights), so the figure covers
generation, PSNR, own-SyncNet LSE and the per-frame calibration metrics.

    python benchmarks/evaluate_fps.py [--presets tiny paper] [--frames 25] [--device cpu] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from julnet.config import load_config  # noqa: E402
from julnet.data.preprocess import run  # noqa: E402
from julnet.evaluation.suite import evaluate  # noqa: E402
from julnet.models.syncnet import SyncNet  # noqa: E402
from julnet.models.talking_face import build_talking_face  # noqa: E402

CLIPS = [ROOT / "tests" / "data" / "bbaf2n.mpg", ROOT / "tests" / "data" / "id2_vcd_swwp2s.mpg"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--frames", type=int, default=25, help="frames per video (two videos)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}")

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for clip in CLIPS:
            shutil.copy(clip, raw / clip.name)
        run(str(raw), f"{tmp}/data", load_config("tiny", ["preprocess.val_fraction=0", "preprocess.test_fraction=0"]))
        for preset in args.presets:
            torch.manual_seed(0)
            weights = Path(tmp) / f"syncnet-{preset}.pt"
            cfg = load_config(preset)
            torch.save(SyncNet(cfg, cfg.audio.window).state_dict(), weights)
            settings = load_config(preset, [
                f"syncnet.weights.path={weights}", "evaluation.split=train", f"evaluation.max_frames_per_video={args.frames}",
                "evaluation.max_frames=null", f"evaluation.batch_size={args.batch_size}",
            ])
            model = (cfg, build_talking_face(cfg))
            one_frame = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update={"max_frames": 1})})
            evaluate(model, f"{tmp}/data/manifest.json", one_frame, device=args.device)  # warm-up: first-call costs
            result = evaluate(model, f"{tmp}/data/manifest.json", settings, device=args.device, model_id=f"random {preset}")
            frames, (w, h) = result.counts["frames"], result.resolution
            print(f"{preset:>6} {h}x{w}: {frames} frames in {result.seconds:.1f} s = {frames / result.seconds:.2f} frames/s "
                  f"(RANDOM weights; metrics not shown)")


if __name__ == "__main__":
    main()
