"""68-point iBUG face landmarks: a backend interface, an offline dlib backend, and an OpenFace CSV importer."""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from types import ModuleType
from typing import Any, Protocol

import cv2
import numpy as np

N_LANDMARKS = 68
MOUTH = slice(48, 68)  # outer lip 48..59, inner lip 60..67
NOSE_BRIDGE = 29
NOSE_TIP = 33
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


class LandmarkBackend(Protocol):
    """Finds the faces in an RGB frame and returns their 68 iBUG landmarks."""

    def detect_faces(self, frame_rgb: np.ndarray) -> list[np.ndarray]:
        """(68, 2) float32 (x, y) pixel coordinates of every face, largest first; empty when there is none."""
        ...

    def refine_faces(self, frame_rgb: np.ndarray, previous: list[np.ndarray]) -> list[np.ndarray]:
        """Each face's landmarks in this frame, found near its `previous` landmarks without running the detector."""
        ...


def predictor_path() -> str:
    """Path of the 68-point dlib predictor shipped by the face-recognition-models package.

    Located without importing the package: its __init__ needs pkg_resources, which setuptools >= 81 removed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 68-point landmark model is missing: pip install face-recognition-models")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "models", PREDICTOR_FILE)
    if not os.path.isfile(path):
        raise ImportError(f"{path} is missing: reinstall face-recognition-models")
    return path


def detector_box(points: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the box dlib's detector would give around these landmarks: a square 1.19 landmark
    widths across, centred 0.084 widths above the landmarks' centre (measured on the 8 GRID clips, spread 0.03-0.06)."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    width, cx, cy = x1 - x0, (x0 + x1) / 2, (y0 + y1) / 2 - 0.084 * (x1 - x0)
    half = 1.19 * width / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def _dlib() -> ModuleType:
    try:
        import dlib
    except ImportError as exc:
        raise ImportError("dlib is not importable: pip install dlib-bin") from exc
    return dlib


@functools.cache
def _dlib_models() -> tuple[Any, Any]:
    """dlib's HOG face detector and the 68-point shape predictor, loaded once per process."""
    dlib = _dlib()
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path())


class DlibBackend:
    """dlib frontal-face HOG detector + 68-point predictor; works offline from PyPI wheels.

    `detect_size`: frames whose longer side exceeds this are downscaled for the (slow) face detection only (a
    1080x1920 portrait frame by 3, to 360x640); the landmark predictor then runs on the full-resolution frame inside
    the rescaled face box. `upsample` is dlib's detector upsampling: 0 finds faces from ~80 px at the detection
    scale, 1 from ~40 px at ~3.5x the cost.
    """

    def __init__(self, detect_size: int | None = 640, upsample: int = 0) -> None:
        self.detect_size = detect_size
        self.upsample = upsample
        self._detector, self._predictor = _dlib_models()

    def detect_faces(self, frame_rgb: np.ndarray) -> list[np.ndarray]:
        """(68, 2) float32 landmarks of every face, largest detection first (the tracker picks among them)."""
        frame = np.ascontiguousarray(frame_rgb)
        scale = 1.0
        small = frame
        if self.detect_size is not None and max(frame.shape[:2]) > self.detect_size:
            scale = max(frame.shape[:2]) / self.detect_size
            size = (round(frame.shape[1] / scale), round(frame.shape[0] / scale))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        faces = sorted(self._detector(small, self.upsample), key=lambda r: -r.width() * r.height())
        return [self._landmarks(frame, tuple(round(v * scale) for v in (f.left(), f.top(), f.right(), f.bottom()))) for f in faces]

    def refine_faces(self, frame_rgb: np.ndarray, previous: list[np.ndarray]) -> list[np.ndarray]:
        """The predictor alone, in the detector-like box of each face's previous landmarks: no detector, no downscaling."""
        frame = np.ascontiguousarray(frame_rgb)
        return [self._landmarks(frame, detector_box(points)) for points in previous]

    def _landmarks(self, frame: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
        """(68, 2) float32 landmarks the predictor finds in a (left, top, right, bottom) box of the full-resolution frame."""
        return np.array([(p.x, p.y) for p in self._predictor(frame, _dlib().rectangle(*box)).parts()], dtype=np.float32)

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """(68, 2) float32 landmarks of the largest face, or None (one frame on its own; videos use the tracker)."""
        faces = self.detect_faces(frame_rgb)
        return faces[0] if faces else None


@functools.cache
def shared_dlib() -> DlibBackend:
    """One dlib landmark model per process (loading it takes about a second)."""
    return DlibBackend()


def read_openface_csv(path: str | os.PathLike[str], n_frames: int | None = None) -> list[list[np.ndarray]]:
    """Per frame, every face's (68, 2) float32 landmarks from an OpenFace CSV (FeatureExtraction, or
    FaceLandmarkVidMulti with a face_id per row); rows whose `success` is 0 give no face.

    OpenFace numbers frames from 1; list index i is frame i + 1. Which face is the subject is left to the tracker
    (julnet.data.track), as for dlib's detections: picking per frame would jump between people. `n_frames` fixes
    the list length (missing frames hold no face).
    """
    with open(path, newline="") as f:
        reader = csv.reader(f, skipinitialspace=True)
        header = [name.strip() for name in next(reader)]
        col = {name: i for i, name in enumerate(header)}
        needed = ["frame", "success"] + [f"{a}_{k}" for a in "xy" for k in range(N_LANDMARKS)]
        missing = [name for name in needed if name not in col]
        if missing:
            raise ValueError(f"{path}: not an OpenFace landmark CSV, missing columns {missing[:4]}...")
        xs = [col[f"x_{k}"] for k in range(N_LANDMARKS)]
        ys = [col[f"y_{k}"] for k in range(N_LANDMARKS)]
        faces: dict[int, list[np.ndarray]] = {}
        for row in reader:
            if not row:
                continue
            frame = int(float(row[col["frame"]])) - 1
            found = faces.setdefault(frame, [])
            if float(row[col["success"]]) > 0:
                found.append(np.stack([[float(row[i]) for i in xs], [float(row[i]) for i in ys]], axis=1).astype(np.float32))
    length = n_frames if n_frames is not None else max(faces, default=-1) + 1
    return [faces.get(i, []) for i in range(length)]
