"""Putting generated pixels back into the source frame: only the repainted mouth region, with a feathered edge."""

from __future__ import annotations

import cv2
import numpy as np

from julnet.data.crop import pixel_box
from julnet.face import mouth_box

def _feather_mask(h: int, w: int, feather: float) -> np.ndarray:
    """(h, w, 1) float32: 1 inside, a linear ramp to ~0 over `feather` of the shorter side at the edge."""
    ramp = max(1.0, feather * min(h, w))
    ys = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5)
    xs = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5)
    mask = np.minimum.outer(ys, xs) / ramp
    return np.clip(mask, 0.0, 1.0).astype(np.float32)[..., None]


def mouth_rect(box: np.ndarray, crop_h: int, crop_w: int) -> tuple[int, int, int, int]:
    """The source rectangle (x0, y0, x1, y1), end-exclusive, that the crop's mouth region (face.mouth_box) covers."""
    x0, y0, x1, y1 = pixel_box(box)
    top, left, side = mouth_box(crop_h, crop_w)
    sx, sy = (x1 - x0) / crop_w, (y1 - y0) / crop_h
    mx0, my0 = x0 + round(left * sx), y0 + round(top * sy)
    return mx0, my0, max(x0 + round((left + side) * sx), mx0 + 1), max(y0 + round((top + side) * sy), my0 + 1)


def paste(frame: np.ndarray, crop: np.ndarray, box: np.ndarray, feather: float = 0.1) -> np.ndarray:
    """A copy of `frame` with the mouth region of `crop` (a generated face crop of the box, RGB in [0, 255]) resized
    into place and blended with a feathered edge. Only that region was repainted (the generator saw the source's
    own pixels everywhere else), so every pixel outside it stays the source's, whatever the model's quality."""
    out = frame.copy()
    h, w = crop.shape[:2]
    top, left, side = mouth_box(h, w)
    x0, y0, x1, y1 = mouth_rect(box, h, w)
    patch = cv2.resize(np.asarray(crop[top : top + side, left : left + side], np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    mask = _feather_mask(y1 - y0, x1 - x0, feather)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    sub = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    region = out[fy0:fy1, fx0:fx1].astype(np.float32)
    m = mask[sub]
    out[fy0:fy1, fx0:fx1] = np.clip(region * (1 - m) + patch[sub] * m + 0.5, 0, 255).astype(np.uint8)
    return out


def heat_map(sigma: np.ndarray, sigma_max: float) -> np.ndarray:
    """σ map (h, w) -> RGB uint8 JET colours, σ = 0 .. sigma_max (clipped)."""
    level = np.clip(sigma / sigma_max, 0, 1) * 255
    return cv2.cvtColor(cv2.applyColorMap(level.astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
