"""Landmark pass frames/s per core at 360p, 720p and 1080x1920 portrait: full-resolution detection, detection
downscaled to 640 px on the longer side, and that with faces followed between detections; and how far each lands
from the first.

    python benchmarks/landmarks_fps.py [--sizes 640x360 1280x720 1080x1920] [--frames 75] [--repeats 3] \
        [--redetect-every 5] [--out /tmp/landmarks_fps.json]

A GRID clip (360x288) is scaled to fit each size and padded (letterbox or portrait bars), written as H.264 with
PyAV (the ffmpeg libraries; no ffmpeg binary is needed) into a temporary folder, then decoded once by the
preprocessing decoder. The timed part is julnet.data.track.detect_frames over the decoded frames, the pass
preprocessing and `julnet generate` run (dlib face detection, 68-point landmarks, scene-cut signatures), in one
process with OpenCV on one thread: frames/s per core. Decoding is not timed. Agreement is the mean distance in
pixels of the 68 landmarks from those of full-resolution detection on every frame (frames where both found a face).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import gpu_check as check  # noqa: E402
from julnet.config import PreprocessConfig  # noqa: E402
from julnet.data.landmarks import DlibBackend  # noqa: E402
from julnet.data.track import Faces, detect_frames  # noqa: E402
from julnet.data.video import read_frames  # noqa: E402

CLIP = check.ROOT / "examples" / "grid" / "bbaf2n.mpg"


def letterboxed(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frames scaled to fit width x height, centred on black bars."""
    h, w = frames.shape[1:3]
    scale = min(width / w, height / h)
    size = (round(w * scale), round(h * scale))
    out = np.zeros((len(frames), height, width, 3), np.uint8)
    x, y = (width - size[0]) // 2, (height - size[1]) // 2
    for canvas, frame in zip(out, frames):
        canvas[y : y + size[1], x : x + size[0]] = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
    return out


def write_h264(path: Path, frames: np.ndarray) -> Path:
    """A 25 fps H.264 file (CRF 18) of RGB frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode())
    return path


def agreement(faces: list[Faces], reference: list[Faces]) -> float | None:
    """Mean landmark distance in pixels from the reference, over frames where both found a face (largest face)."""
    distances = [float(np.linalg.norm(f[0] - r[0], axis=1).mean()) for f, r in zip(faces, reference) if f and r]
    return statistics.fmean(distances) if distances else None


def measure(frames: np.ndarray, backend: DlibBackend, settings: PreprocessConfig, repeats: int, warmup: int) -> tuple[dict[str, Any], list[Faces]]:
    """frames/s of detect_frames over the frames: median and spread of `repeats` timed passes after `warmup` untimed."""
    for _ in range(warmup):
        detect_frames(frames[: max(1, len(frames) // 4)], settings, backend)
    rates, faces = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        faces, _ = detect_frames(frames, settings, backend)
        rates.append(len(frames) / (time.perf_counter() - start))
    row = {
        "frames_per_s_median": statistics.median(rates),
        "frames_per_s_min": min(rates),
        "frames_per_s_max": max(rates),
        "frames_per_s_stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "repeats": repeats,
        "frames_with_face": sum(bool(f) for f in faces),
    }
    return row, faces


def size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT as a pair of positive ints."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 1280x720)") from None
    if width < 64 or height < 64:
        raise argparse.ArgumentTypeError(f"{text}: both sides must be at least 64")
    return width, height


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=CLIP, help="source clip (default: a GRID sample)")
    p.add_argument("--sizes", type=size, nargs="+", default=[(640, 360), (1280, 720), (1080, 1920)], metavar="WxH")
    p.add_argument("--frames", type=int, default=75, help="frames of the clip (default: 75, its first 3 s)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes of each mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes over a quarter of the frames first")
    p.add_argument("--detect-size", type=int, default=DlibBackend().detect_size, help="longer side of the downscaled frame detection runs on")
    p.add_argument("--redetect-every", type=int, default=PreprocessConfig().track_redetect_every, help="detector period when following")
    p.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = p.parse_args(argv)
    if args.frames < 1 or args.repeats < 1 or args.warmup < 0 or args.redetect_every < 2:
        p.error("--frames and --repeats must be >= 1, --warmup >= 0, --redetect-every >= 2")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    machine = check.machine_info(torch.device("cpu"))
    check.say(f"machine: {machine['cpu_model']} ({machine['cpu_cores']} cores, {machine['cpu_cores_usable']} usable); "
              f"torch {machine['torch']}; dlib and OpenCV on one thread")
    source = read_frames(args.clip)[: args.frames]
    modes = {
        "full": (None, 1),
        "downscaled": (args.detect_size, 1),
        "downscaled+following": (args.detect_size, args.redetect_every),
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="landmarks-fps-") as tmp:
        for width, height in args.sizes:
            video = write_h264(Path(tmp) / f"{width}x{height}.mp4", letterboxed(source, width, height))
            frames = read_frames(video)
            rows: dict[str, Any] = {}
            reference: list[Faces] = []
            for name, (detect_size, every) in modes.items():
                row, faces = measure(frames, DlibBackend(detect_size), PreprocessConfig(track_redetect_every=every), args.repeats, args.warmup)
                reference = reference or faces
                row["detect_size"], row["redetect_every"] = detect_size, every
                row["mean_px_from_full"] = agreement(faces, reference)
                rows[name] = row
                px = row["mean_px_from_full"]
                check.say(f"{width}x{height} {name:>20}: {row['frames_per_s_median']:6.1f} frames/s "
                          f"[{row['frames_per_s_min']:.1f}..{row['frames_per_s_max']:.1f}], face in {row['frames_with_face']}/{len(frames)}, "
                          f"{'n/a' if px is None else f'{px:.2f}'} px from full")
            results.append({"width": width, "height": height, "frames": len(frames), "modes": rows})
    check.save_report(args.out, argv, machine, clip=str(args.clip), results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
