"""One face per video, tracked: the subject is picked once per shot and followed, never swapped for another person.

The subject is the largest face over the first `track_init_frames` frames (of each shot) that hold a face.
From there it is followed frame by frame, forwards and backwards: a frame's face continues the track only if
its landmark box overlaps the subject's last box (IoU >= `track_min_iou`) and its landmarks moved little
(mean displacement <= `track_max_jump` face widths). A frame where no face does is "no face" (None), never
another person. This is the pass preprocessing and `julnet generate` share (`track_video`).

The face detector is the costly part of that pass (HOG over the frame). Between detections every face found is
followed by the landmark predictor alone, in the box its previous landmarks give (`detect_frames`); the detector
runs again every `track_redetect_every` frames, at each scene cut, and wherever a followed face moved too far.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from julnet.config import PreprocessConfig
from julnet.data.landmarks import LandmarkBackend, shared_dlib
from julnet.data.scenes import frame_signature, is_cut, segment_ranges
from julnet.data.video import iter_frames

Faces = list[np.ndarray]  # every face's (68, 2) landmarks in one frame


@dataclass(frozen=True)
class SubjectTrack:
    """The subject's landmarks per frame (None where it was not found), the shots, and whether others were seen."""

    landmarks: list[np.ndarray | None]
    segments: list[int]  # first frame of each shot (scene cut); [0] for one shot
    multiple_faces: bool  # some frame held more than one face

    @property
    def lost(self) -> list[bool]:
        """Per frame: the subject was not found (tracking lost, or no face at all)."""
        return [points is None for points in self.landmarks]


def landmark_box(points: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) around a face's landmarks."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _continues(last: np.ndarray, face: np.ndarray, min_iou: float, max_jump: float) -> float | None:
    """The overlap of `face` with the subject's `last` landmarks when it may continue the track, else None."""
    overlap = iou(landmark_box(last), landmark_box(face))
    width = max(float(np.linalg.norm(last[16] - last[0])), 1.0)
    jump = float(np.linalg.norm(face - last, axis=1).mean()) / width
    return overlap if overlap >= min_iou and jump <= max_jump else None


def _area(points: np.ndarray) -> float:
    return float(np.prod(np.ptp(points, axis=0)))


def follow_subject(faces: Sequence[Faces], settings: PreprocessConfig) -> list[np.ndarray | None]:
    """The subject's landmarks in each frame of one shot: picked once, followed both ways from where it was picked."""
    n = len(faces)
    with_faces = [i for i in range(n) if faces[i]][: settings.track_init_frames]
    out: list[np.ndarray | None] = [None] * n
    if not with_faces:
        return out
    seed = max(((i, face) for i in with_faces for face in faces[i]), key=lambda item: _area(item[1]))
    out[seed[0]] = seed[1]
    for order in (range(seed[0] + 1, n), range(seed[0] - 1, -1, -1)):
        last = seed[1]
        for i in order:
            scored = [(s, face) for face in faces[i] if (s := _continues(last, face, settings.track_min_iou, settings.track_max_jump)) is not None]
            if scored:
                out[i] = last = max(scored, key=lambda item: item[0])[1]
    return out


def track_faces(faces: Sequence[Faces], segments: Sequence[int], settings: PreprocessConfig) -> SubjectTrack:
    """The subject of every shot (`segments`: first frames) tracked through per-frame face lists."""
    landmarks: list[np.ndarray | None] = []
    for shot in segment_ranges(segments, len(faces)):
        landmarks += follow_subject(faces[shot.start : shot.stop], settings)
    return SubjectTrack(landmarks, list(segments), any(len(f) > 1 for f in faces))


def detect_frames(
    frames: Iterable[np.ndarray], settings: PreprocessConfig = PreprocessConfig(), backend: LandmarkBackend | None = None
) -> tuple[list[Faces], list[int]]:
    """Every frame's faces and the shots' first frames, in one pass over RGB frames.

    The detector runs on a shot's first frame and then at least every `track_redetect_every` frames; in between each
    face is refined from its previous landmarks, unless one of them fails to continue (as `follow_subject` judges).
    """
    backend = backend or shared_dlib()
    faces: list[Faces] = []
    segments: list[int] = []
    previous, since_detection = None, 0
    for i, frame in enumerate(frames):
        signature = frame_signature(frame)
        if previous is None or is_cut(previous, signature, settings.scene_cut_histogram, settings.scene_cut_pixels):
            segments.append(i)
        previous, found = signature, None
        if segments[-1] != i and faces[-1] and since_detection < settings.track_redetect_every:
            refined = backend.refine_faces(frame, faces[-1])
            if all(_continues(a, b, settings.track_min_iou, settings.track_max_jump) is not None for a, b in zip(faces[-1], refined)):
                found, since_detection = sorted(refined, key=_area, reverse=True), since_detection + 1
        if found is None:
            found, since_detection = backend.detect_faces(frame), 1
        faces.append(found)
    return faces, segments


def track_frames(
    frames: Iterable[np.ndarray], settings: PreprocessConfig = PreprocessConfig(), backend: LandmarkBackend | None = None
) -> SubjectTrack:
    """Detect (and follow) every face and the scene cuts in one pass over RGB frames, then track the subject of each shot."""
    faces, segments = detect_frames(frames, settings, backend)
    return track_faces(faces, segments or [0], settings)


def track_video(path: str | os.PathLike[str], fps: int, settings: PreprocessConfig = PreprocessConfig()) -> SubjectTrack:
    """The tracked subject of a video decoded at `fps`: what `julnet generate` calls to crop and to flag lost frames."""
    return track_frames(iter_frames(path, fps), settings)
