"""One face per video, tracked: the subject is picked once per shot and followed, never swapped for another person.

The subject is the largest face over the first `track_init_frames` frames (of each shot) that hold a face.
From there it is followed frame by frame, forwards and backwards: a frame's face continues the track only if
its landmark box overlaps the subject's last box (IoU >= `track_min_iou`) and its landmarks moved little
(mean displacement <= `track_max_jump` face widths). Where none does, the subject is lost, and taken back by
identity: by the face whose dlib face descriptor is nearest the subject's, within `track_identity_distance` (dlib's
same-person threshold; two GRID speakers lie 0.94 apart, one speaker's frames 0.2), so a face that left the picture
is found again when it returns, and another person is not taken meanwhile. A frame where neither finds it has "no
face" (None), never another person's. Where the subject is taken back right after a frame that showed it, it moved
further than a face moves between two frames (a fast pan, say): `SubjectTrack.jumped`, which `julnet generate` does
not dub. This is the pass preprocessing and `julnet generate` share (`track_video`).

The face detector is the costly part of that pass (HOG over the frame). Between detections every face found is
followed by the landmark predictor alone, in the box its previous landmarks give (`detect_frames`); the detector
runs again every `track_redetect_every` frames, at each scene cut, on every frame while no face is followed, and
wherever a followed face moved too far or no longer looks as it did a frame before (the predictor, left behind
by a fast move, puts landmarks beside the face). Each face the detector finds anew gets an `Identity`: its aligned
face chip, whose descriptor (dlib's face recognition ResNet, ~150 ms on one core) is computed only if the subject
is lost and the face is compared with it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from julnet.config import PreprocessConfig
from julnet.data.landmarks import LandmarkBackend, detector_box, predictor_path, shared_dlib
from julnet.data.scenes import frame_signature, is_cut, segment_ranges
from julnet.data.video import iter_frames

Faces = list[np.ndarray]  # every face's (68, 2) landmarks in one frame
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LOOK_SIZE = 16  # side of the grey patch a followed face's look is compared on


@dataclass(frozen=True)
class SubjectTrack:
    """The subject's landmarks per frame (None where it was not found), the shots, whether others were seen, and the
    frames where it jumped (found, but further from the frame before's face than a face moves between frames)."""

    landmarks: list[np.ndarray | None]
    segments: list[int]  # first frame of each shot (scene cut); [0] for one shot
    multiple_faces: bool  # some frame held more than one face
    jumped: list[bool]

    @property
    def lost(self) -> list[bool]:
        """Per frame: the subject was not found (tracking lost, or no face at all)."""
        return [points is None for points in self.landmarks]


@functools.cache
def _recognizer() -> Any:
    """dlib's face recognition ResNet (128-D face descriptors), shipped beside the landmark predictor; loaded once."""
    import dlib

    path = os.path.join(os.path.dirname(predictor_path()), RECOGNITION_FILE)
    if not os.path.isfile(path):
        raise ImportError(f"{path} is missing: reinstall face-recognition-models")
    return dlib.face_recognition_model_v1(path)


class Identity:
    """Who one followed face is: its 150x150 face chip aligned as dlib.get_face_chip does, taken where the detector
    found it (again where it first lay wholly inside the frame), and the chip's dlib descriptor, computed on first use."""

    def __init__(self, frame_rgb: np.ndarray, points: np.ndarray) -> None:
        self._descriptor: np.ndarray | None = None
        self._inside = False
        self.update(frame_rgb, points)

    def update(self, frame_rgb: np.ndarray, points: np.ndarray) -> None:
        """Take the chip from this frame, unless the one taken already showed the face wholly inside its frame."""
        if self._inside:
            return
        import dlib

        parts = [dlib.point(round(float(x)), round(float(y))) for x, y in points]
        shape = dlib.full_object_detection(dlib.rectangle(*detector_box(points)), parts)
        self.chip = dlib.get_face_chip(np.ascontiguousarray(frame_rgb), shape, size=150, padding=0.25)
        box, (height, width) = landmark_box(points), frame_rgb.shape[:2]
        self._inside = bool(box[0] >= 0 and box[1] >= 0 and box[2] < width and box[3] < height)

    def descriptor(self) -> np.ndarray:
        """dlib's 128-D face descriptor of the chip."""
        if self._descriptor is None:
            self._descriptor = np.array(_recognizer().compute_face_descriptor(self.chip))
        return self._descriptor

    def distance(self, other: Identity) -> float:
        """Euclidean distance between the two descriptors (dlib: below 0.6, the same person); 0 for the same face."""
        return 0.0 if other is self else float(np.linalg.norm(self.descriptor() - other.descriptor()))


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


def _continues(last: np.ndarray, face: np.ndarray, settings: PreprocessConfig) -> float | None:
    """The overlap of `face` with the subject's `last` landmarks when it may continue the track, else None."""
    overlap = iou(landmark_box(last), landmark_box(face))
    width = max(float(np.linalg.norm(last[16] - last[0])), 1.0)
    jump = float(np.linalg.norm(face - last, axis=1).mean()) / width
    return overlap if overlap >= settings.track_min_iou and jump <= settings.track_max_jump else None


def _area(points: np.ndarray) -> float:
    return float(np.prod(np.ptp(points, axis=0)))


def _best(candidates: list[tuple[float, Any]]) -> Any:
    """The item of the highest-scoring (score, item) pair; None when there is none."""
    return max(candidates, key=lambda item: item[0])[1] if candidates else None


def follow_subject(
    faces: Sequence[Faces], settings: PreprocessConfig, identities: Sequence[list[Identity]] | None = None
) -> list[np.ndarray | None]:
    """The subject's landmarks in each frame of one shot: picked once, followed both ways from where it was picked and,
    given each face's `identities`, taken back where it was lost by the face nearest it within track_identity_distance."""
    n = len(faces)
    with_faces = [i for i in range(n) if faces[i]][: settings.track_init_frames]
    out: list[np.ndarray | None] = [None] * n
    if not with_faces:
        return out
    start, pick = max(((i, k) for i in with_faces for k in range(len(faces[i]))), key=lambda ik: _area(faces[ik[0]][ik[1]]))
    subject = identities[start][pick] if identities is not None else None
    out[start] = faces[start][pick]
    for order in (range(start + 1, n), range(start - 1, -1, -1)):
        last = out[start]
        for i in order:
            face = _best([(s, face) for face in faces[i] if (s := _continues(last, face, settings)) is not None])
            if face is None and subject is not None:
                near = [(-d, face) for face, who in zip(faces[i], identities[i]) if (d := who.distance(subject)) <= settings.track_identity_distance]
                face = _best(near)
            if face is not None:
                out[i] = last = face
    return out


def track_faces(
    faces: Sequence[Faces], segments: Sequence[int], settings: PreprocessConfig, identities: Sequence[list[Identity]] | None = None
) -> SubjectTrack:
    """The subject of every shot (`segments`: first frames) tracked through per-frame face lists (and their identities)."""
    landmarks: list[np.ndarray | None] = []
    jumped: list[bool] = []
    for shot in segment_ranges(segments, len(faces)):
        part = follow_subject(faces[shot.start : shot.stop], settings, None if identities is None else identities[shot.start : shot.stop])
        landmarks += part
        jumped += [False] + [a is not None and b is not None and _continues(a, b, settings) is None for a, b in zip(part, part[1:])]
    return SubjectTrack(landmarks, list(segments), any(len(f) > 1 for f in faces), jumped)


def _look(frame_rgb: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """What a face looks like: the part of its landmark box inside the frame as LOOK_SIZE² grey levels, zero mean and
    unit norm (None when too little of it is inside)."""
    height, width = frame_rgb.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in landmark_box(points))
    region = frame_rgb[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if min(region.shape[:2]) < 2:
        return None
    grey = cv2.resize(region, (LOOK_SIZE, LOOK_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32).mean(axis=2)
    grey -= grey.mean()
    norm = float(np.linalg.norm(grey))
    return grey / norm if norm > 0 else None


def _looks_alike(a: np.ndarray | None, b: np.ndarray | None, settings: PreprocessConfig) -> bool:
    """Whether two looks correlate at least track_min_similarity."""
    return a is not None and b is not None and float((a * b).sum()) >= settings.track_min_similarity


def _detect(
    frames: Iterable[np.ndarray], settings: PreprocessConfig, backend: LandmarkBackend | None
) -> tuple[list[Faces], list[list[Identity]], list[int]]:
    """detect_frames, with each face's Identity: inherited from the face it continues, of the shot's last frame that held
    faces (a face missed for a few frames keeps its identity), else new."""
    backend = backend or shared_dlib()
    faces: list[Faces] = []
    identities: list[list[Identity]] = []
    segments: list[int] = []
    signature, since_detection = None, 0
    looks: list[np.ndarray | None] = []  # the previous frame's faces' looks
    seen: list[tuple[np.ndarray, Identity]] = []  # the faces of the shot's last frame that held any
    for i, frame in enumerate(frames):
        previous, signature = signature, frame_signature(frame)
        if previous is None or is_cut(previous, signature, settings.scene_cut_histogram, settings.scene_cut_pixels):
            segments.append(i)
        found: list[tuple[np.ndarray, Identity, np.ndarray | None]] | None = None
        if segments[-1] != i and faces[-1] and since_detection < settings.track_redetect_every:
            refined = backend.refine_faces(frame, faces[-1])
            followed = [(face, who, _look(frame, face)) for face, who in zip(refined, identities[-1])]
            if all(_continues(a, b, settings) is not None and _looks_alike(look, b_look, settings)
                   for a, look, (b, _, b_look) in zip(faces[-1], looks, followed)):
                found, since_detection = sorted(followed, key=lambda f: _area(f[0]), reverse=True), since_detection + 1
        if found is None:
            before = seen if segments[-1] != i else []
            found, since_detection = [], 1
            for face in backend.detect_faces(frame):
                who = _best([(s, other) for last, other in before if (s := _continues(last, face, settings)) is not None])
                if who is None:
                    who = Identity(frame, face)
                else:
                    before = [(last, other) for last, other in before if other is not who]
                    who.update(frame, face)
                found.append((face, who, _look(frame, face)))
        faces.append([face for face, _, _ in found])
        identities.append([who for _, who, _ in found])
        looks = [look for _, _, look in found]
        seen = list(zip(faces[-1], identities[-1])) if found or segments[-1] == i else seen
    return faces, identities, segments


def detect_frames(
    frames: Iterable[np.ndarray], settings: PreprocessConfig = PreprocessConfig(), backend: LandmarkBackend | None = None
) -> tuple[list[Faces], list[int]]:
    """Every frame's faces and the shots' first frames, in one pass over RGB frames.

    The detector runs on a shot's first frame and then at least every `track_redetect_every` frames; in between each
    face is refined from its previous landmarks, unless one of them fails to continue (as `follow_subject` judges) or
    no longer looks as it did a frame before (`track_min_similarity`).
    """
    faces, _, segments = _detect(frames, settings, backend)
    return faces, segments


def track_frames(
    frames: Iterable[np.ndarray], settings: PreprocessConfig = PreprocessConfig(), backend: LandmarkBackend | None = None
) -> SubjectTrack:
    """Detect (and follow) every face and the scene cuts in one pass over RGB frames, then track the subject of each shot."""
    faces, identities, segments = _detect(frames, settings, backend)
    return track_faces(faces, segments or [0], settings, identities)


def track_video(path: str | os.PathLike[str], fps: int, settings: PreprocessConfig = PreprocessConfig()) -> SubjectTrack:
    """The tracked subject of a video decoded at `fps`: what `julnet generate` calls to crop and to flag lost frames."""
    return track_frames(iter_frames(path, fps), settings)
