"""Face crops from landmarks: a smoothed per-frame box with the mouth inside face.mouth_box, and the crop itself.

Box geometry (DINet's layout, 416:320 = 3.25 : 2.5): with a radius r, the box spans rows
[y29 - r, y29 + 2.25 r] and cols [x33 - 1.25 r, x33 + 1.25 r] (landmark 29 on the nose bridge, 33 the nose
tip), so face.mouth_box (rows 128..384, cols 32..288 of 416x320) is the source square y29 .. y29 + 2 r by
x33 - r .. x33 + r. DINet takes r from the chin-to-nose-bridge distance, which grows whenever the jaw
opens; here r comes from rigid parts of the face instead, so the crop does not breathe with speech:
r = max(0.46 * face width (|p16 - p0|), 0.65 * eye-centre-to-mouth-corners distance), the second term
taking over only when a turned head narrows the face (roughly beyond 40 degrees of yaw for GRID's faces). DINet's radius averages
0.41 face widths on GRID; 0.46 also keeps the chin (landmark 8) inside the mouth box on every GRID frame,
so the masked region covers the jaw's motion, not only the lips.

Smoothing only averages frames of one stretch: consecutive frames with landmarks, between which the face moved at
most MAX_SMOOTHED_STEP radii. A centred average over a step of d moves the frames beside it by up to 0.4 d, so a
stretch ends at a faceless frame (whose box is made up) and at a bigger step (a fast pan, a face taken back elsewhere):
the box of a frame with landmarks never leans on another place than its own face's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from julnet.data.landmarks import MOUTH, NOSE_BRIDGE, NOSE_TIP
from julnet.data.video import VideoError
from julnet.face import mouth_box

OUT_H, OUT_W = 416, 320
FACE_WIDTH_K = 0.46
EYE_MOUTH_K = 0.65
# Box extents in units of r around (x33, y29): 3.25 r tall and 2.5 r wide, i.e. OUT_H : OUT_W.
_TOP, _BOTTOM, _HALF_WIDTH = 1.0, 2.25, 1.25
MAX_SMOOTHED_STEP = 0.5  # radii the face may move between two frames smoothed together (GRID: at most 0.03)


@dataclass(frozen=True)
class CropTrack:
    """Per-frame crop boxes (x0, y0, x1, y1) in source pixels, and how many frames had no landmarks."""

    boxes: np.ndarray  # (N, 4) float64
    missing: int

    @property
    def missing_fraction(self) -> float:
        return self.missing / len(self.boxes)


def face_params(points: np.ndarray) -> tuple[float, float, float]:
    """(x of the nose tip, y of the nose bridge, radius r) of one face's 68 landmarks."""
    face_width = float(np.linalg.norm(points[16] - points[0]))
    eyes = points[36:48].mean(axis=0)
    mouth = (points[48] + points[54]) / 2
    radius = max(FACE_WIDTH_K * face_width, EYE_MOUTH_K * float(np.linalg.norm(mouth - eyes)))
    return float(points[NOSE_TIP, 0]), float(points[NOSE_BRIDGE, 1]), radius


def box_from_params(cx: float, anchor_y: float, radius: float) -> np.ndarray:
    """(x0, y0, x1, y1) of the crop for these face parameters."""
    return np.array(
        [cx - _HALF_WIDTH * radius, anchor_y - _TOP * radius, cx + _HALF_WIDTH * radius, anchor_y + _BOTTOM * radius]
    )


def crop_boxes(
    landmarks: Sequence[np.ndarray | None],
    *,
    max_missing: float = 0.2,
    smooth_center: int = 5,
    smooth_scale: int = 25,
) -> CropTrack:
    """Smoothed crop boxes for every frame; frames without landmarks are interpolated from their neighbours.

    Raises VideoError('face_lost') when more than `max_missing` of the frames have no landmarks. Within each
    stretch (module docstring) the face centre is smoothed with a centred moving average over `smooth_center`
    frames, the radius over `smooth_scale` frames (both odd; 1 disables).
    """
    n = len(landmarks)
    found = np.array([i for i, points in enumerate(landmarks) if points is not None], dtype=np.int64)
    missing = n - len(found)
    if n == 0 or missing > max_missing * n:
        raise VideoError("face_lost", f"no face in {missing} of {n} frames")
    params = np.array([face_params(landmarks[i]) for i in found])  # (found, 3): cx, anchor_y, radius
    step = np.linalg.norm(np.diff(params[:, :2], axis=0), axis=1) / params[1:, 2]
    for stretch in np.split(np.arange(len(found)), np.flatnonzero((np.diff(found) > 1) | (step > MAX_SMOOTHED_STEP)) + 1):
        for j, window in enumerate((smooth_center, smooth_center, smooth_scale)):
            params[stretch, j] = moving_average(params[stretch, j], window)
    full = np.stack([np.interp(np.arange(n), found, params[:, j]) for j in range(3)], axis=1)
    return CropTrack(boxes=np.stack([box_from_params(*p) for p in full]), missing=missing)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with edge replication; same length as the input."""
    if window % 2 != 1:
        raise ValueError(f"smoothing window must be odd, got {window}")
    half = window // 2
    padded = np.pad(values, half, mode="edge")
    return np.convolve(padded, np.full(window, 1.0 / window), mode="valid")


def pixel_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """The integer source rectangle (x0, y0, x1, y1), end-exclusive, that crop_frame resamples."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def crop_frame(frame: np.ndarray, box: np.ndarray, out_h: int = OUT_H, out_w: int = OUT_W) -> np.ndarray:
    """The box resized to (out_h, out_w); parts outside the frame repeat its border pixels."""
    x0, y0, x1, y1 = pixel_box(box)
    rows = np.clip(np.arange(y0, y1), 0, frame.shape[0] - 1)
    cols = np.clip(np.arange(x0, x1), 0, frame.shape[1] - 1)
    region = frame[np.ix_(rows, cols)]
    shrinking = out_w < region.shape[1] or out_h < region.shape[0]
    return cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def crop_frames(
    frames: Iterable[np.ndarray], boxes: np.ndarray, out_h: int = OUT_H, out_w: int = OUT_W
) -> Iterator[np.ndarray]:
    """crop_frame over a stream of frames, one box each."""
    for frame, box in zip(frames, boxes, strict=True):
        yield crop_frame(frame, box, out_h, out_w)


def to_crop(points: np.ndarray, box: np.ndarray, out_h: int = OUT_H, out_w: int = OUT_W) -> np.ndarray:
    """Source pixel coordinates (..., 2) mapped into the crop_frame output (pixel-centre convention)."""
    x0, y0, x1, y1 = pixel_box(box)
    scale = np.array([out_w / (x1 - x0), out_h / (y1 - y0)])
    return ((points - np.array([x0, y0]) + 0.5) * scale - 0.5).astype(np.float32)


def mouth_margin(points_crop: np.ndarray, out_h: int = OUT_H, out_w: int = OUT_W) -> float:
    """Smallest distance (crop pixels) from a mouth landmark to the edge of mouth_box; negative means outside."""
    top, left, side = mouth_box(out_h, out_w)
    mouth = points_crop[MOUTH]
    return float(
        min(
            (mouth[:, 0] - left).min(),
            (left + side - mouth[:, 0]).min(),
            (mouth[:, 1] - top).min(),
            (top + side - mouth[:, 1]).min(),
        )
    )
