"""Per-video preprocessing on real GRID clips and synthetic edge cases: decode, audio features, landmarks, crop."""

from __future__ import annotations

import itertools
import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from julnet.data import audio, crop, landmarks, video
from julnet.data.track import track_frames
from julnet.data.video import VideoError
from julnet.face import mouth_box

DATA = Path(__file__).parent / "data"
CLIPS = [DATA / "bbaf2n.mpg", DATA / "id2_vcd_swwp2s.mpg"]
# (Near-)lossless settings, so that a decoded frame's grey level tells which input frame it is.
ENCODER_OPTIONS = {
    "libx264": {"qp": "0", "bf": "0"},
    "libx265": {"x265-params": "lossless=1:log-level=error"},
    "libvpx-vp9": {"lossless": "1"},
    "mpeg4": {"qscale": "1"},
    "mpeg2video": {"qscale": "1"},
    "mpeg1video": {"qscale": "1"},
}
# swwp2s.align (GRID, 1/25000 s units): speech from 12250 to 55250, silence before and after.
SPEECH_START, SPEECH_END = 12250 / 25000, 55250 / 25000


def write_video(
    path: Path,
    n_frames: int,
    fps: int,
    *,
    pts_ms: list[int] | None = None,
    rotation: float | None = None,
    audio_seconds: float | None = None,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> None:
    """A 64x48 video (container from the suffix): frame i is grey level 20 + 3 i with a white 8x8 marker top-left."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options={**ENCODER_OPTIONS[codec], **(options or {})})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=44100) if audio_seconds else None
        if sound is not None:
            sound.layout = "stereo"
        for i in range(n_frames):
            image = np.full((48, 64, 3), 20 + 3 * i, np.uint8)
            image[:8, :8] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            t = np.arange(int(44100 * audio_seconds)) / 44100
            wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                chunk = np.ascontiguousarray(np.stack([wave[start : start + 1024]] * 2))
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = 44100, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode())


def frame_index(frame: np.ndarray) -> int:
    """Which synthetic input frame this decoded frame shows (from its grey level, away from the marker)."""
    return round((float(frame[16:, 16:].mean()) - 20) / 3)


@pytest.fixture(scope="module")
def grid() -> dict[Path, dict]:
    """Both GRID clips decoded, with landmarks and crop boxes (computed once: ~2 s)."""
    backend = landmarks.DlibBackend()
    out = {}
    for path in CLIPS:
        clip = video.read_clip(path)
        points = track_frames(clip.frames, backend=backend).landmarks
        out[path] = {"clip": clip, "landmarks": points, "track": crop.crop_boxes(points)}
    return out


# --- decoding: real GRID clips -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CLIPS, ids=lambda p: p.name)
def test_grid_probe(path: Path) -> None:
    info = video.probe(path, require_audio=True)
    assert (info.width, info.height, info.fps, info.rotation) == (360, 288, 25.0, 0)
    assert (info.video_codec, info.audio_codec, info.audio_rate) == ("mpeg1video", "mp2", 44100)
    assert info.has_video and info.has_audio and info.start_time == 0.0
    assert info.duration == pytest.approx(3.0, abs=0.05)


def test_grid_clip_frames_audio_features(grid: dict) -> None:
    for path, item in grid.items():
        clip = item["clip"]
        assert clip.frames.shape == (75, 288, 360, 3) and clip.frames.dtype == np.uint8
        assert clip.fps == 25 and clip.sample_rate == 16000
        assert clip.audio.dtype == np.float32 and abs(len(clip.audio) - 3 * 16000) < 0.02 * 3 * 16000
        assert 0.05 < np.abs(clip.audio).max() < 1.1  # GRID audio is clipped; resampling overshoots a little
        feats = audio.frame_features(clip.audio, clip.sample_rate, len(clip.frames))
        assert feats.shape == (len(clip.frames), 80) and np.isfinite(feats).all()
        windows = audio.frame_windows(feats)
        assert windows.shape == (len(clip.frames), 80, 5)
        np.testing.assert_array_equal(windows[0][:, :3], np.repeat(feats[:1].T, 3, axis=1))  # edge replicated
        np.testing.assert_array_equal(windows[40], feats[38:43].T)
        np.testing.assert_array_equal(windows[-1][:, 2:], np.repeat(feats[-1:].T, 3, axis=1))


def test_streaming_matches_read_frames() -> None:
    stream = video.iter_frames(CLIPS[0])
    first = [next(stream) for _ in range(3)]
    stream.close()
    np.testing.assert_array_equal(np.stack(first), video.read_frames(CLIPS[0])[:3])


def test_audio_features_follow_the_word_alignment(grid: dict) -> None:
    clip = grid[CLIPS[1]]["clip"]
    feats = audio.frame_features(clip.audio, clip.sample_rate, len(clip.frames))
    energy = np.log(np.exp(feats).sum(axis=1))
    centre = (np.arange(len(feats)) + 0.5) / 25
    speech = energy[(centre > SPEECH_START + 0.04) & (centre < SPEECH_END - 0.04)]
    silence = energy[(centre < SPEECH_START - 0.04) | (centre > SPEECH_END + 0.04)]
    assert np.median(speech) > np.median(silence) + 4  # > e^4 times the energy
    loud = np.flatnonzero(energy > np.median(silence) + 2)  # over ~7x the silence energy
    # Audio and video share one clock: speech starts and ends within a frame of the alignment.
    assert abs(loud[0] - SPEECH_START * 25) <= 1.5 and abs(loud[-1] + 1 - SPEECH_END * 25) <= 1.5


# --- landmarks and crop: real GRID clips -----------------------------------------------------------------------


def test_grid_landmarks_and_mouth_in_box(grid: dict) -> None:
    top, left, side = mouth_box(416, 320)
    for item in grid.values():
        frames, points, track = item["clip"].frames, item["landmarks"], item["track"]
        assert all(p is not None and p.shape == (68, 2) and p.dtype == np.float32 for p in points)
        stacked = np.stack(points)
        assert (stacked >= 0).all() and (stacked[..., 0] < 360).all() and (stacked[..., 1] < 288).all()
        assert track.missing == 0 and track.boxes.shape == (75, 4)
        ratios = (track.boxes[:, 3] - track.boxes[:, 1]) / (track.boxes[:, 2] - track.boxes[:, 0])
        np.testing.assert_allclose(ratios, 416 / 320)
        for frame, p, box in zip(frames, points, track.boxes):
            face = crop.crop_frame(frame, box)
            assert face.shape == (416, 320, 3) and face.dtype == np.uint8
            mouth = crop.to_crop(p, box)[48:68]
            assert (mouth[:, 0] >= left).all() and (mouth[:, 0] < left + side).all()
            assert (mouth[:, 1] >= top).all() and (mouth[:, 1] < top + side).all()
            assert crop.mouth_margin(crop.to_crop(p, box)) > 20  # crop pixels, with room to spare


def test_crop_landmark_transform_matches_pixels(grid: dict) -> None:
    item = grid[CLIPS[0]]
    frame, box = item["clip"].frames[10], item["track"].boxes[10]
    marked = frame.copy()
    x, y = item["landmarks"][10][57].astype(int)  # below the lower lip
    marked[y : y + 4, x : x + 4] = (255, 0, 255)  # a 4x4 magenta square centred at (x + 1.5, y + 1.5)
    face = crop.crop_frame(marked, box).astype(int)
    where = np.argwhere((face[..., 0] > 200) & (face[..., 1] < 60) & (face[..., 2] > 200))
    expected = crop.to_crop(np.array([x + 1.5, y + 1.5]), box)
    np.testing.assert_allclose(where.mean(axis=0)[::-1], expected, atol=1.5)


def test_crop_interpolates_missing_faces_and_rejects_lost_ones(grid: dict) -> None:
    points = list(grid[CLIPS[0]]["landmarks"])
    full = crop.crop_boxes(points).boxes
    holey = [None if i % 10 == 3 else p for i, p in enumerate(points)]
    track = crop.crop_boxes(holey)
    assert track.missing == 8 and track.missing_fraction == pytest.approx(8 / 75)
    np.testing.assert_allclose(track.boxes, full, atol=3.0)  # neighbours fill the gaps
    with pytest.raises(VideoError) as err:
        crop.crop_boxes([None if i % 3 else p for i, p in enumerate(points)], max_missing=0.5)
    assert err.value.reason == "face_lost"


def test_crop_pads_with_border_replication() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[:, -1] = 200  # right column
    face = crop.crop_frame(frame, np.array([50.0, 0.0, 150.0, 130.0]), out_h=130, out_w=100)
    assert (face[:, 60:] == 200).all() and (face[:, :49] == 0).all()


# --- decoding: synthetic edge cases ---------------------------------------------------------------------------


def test_30fps_clip_resampled_to_25fps(tmp_path: Path) -> None:
    path = tmp_path / "c30.mp4"
    write_video(path, 60, 30, audio_seconds=2.0)
    info = video.probe(path, min_side=16)
    assert info.fps == 30.0 and info.duration == pytest.approx(2.0, abs=0.05)
    frames = video.read_frames(path)
    assert frames.shape == (50, 48, 64, 3)
    assert [frame_index(f) for f in frames] == [k * 30 // 25 for k in range(50)]  # frame on screen at k/25
    sound = video.read_audio(path, start=info.start_time)
    assert abs(len(sound) - 32000) < 800
    feats = audio.frame_features(sound, 16000, len(frames))
    assert feats.shape == (50, 80)


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [("mov", "libx264"), ("mkv", "libx265"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"), ("mpg", "mpeg2video")],
)
def test_containers_and_codecs(tmp_path: Path, suffix: str, codec: str) -> None:
    path = tmp_path / f"clip.{suffix}"
    write_video(path, 30, 30, codec=codec)
    info = video.probe(path, min_side=16)
    assert info.fps == 30.0 and (info.width, info.height) == (64, 48)
    frames = video.read_frames(path)
    assert frames.shape == (25, 48, 64, 3)
    error = np.abs(np.array([frame_index(f) for f in frames]) - [k * 30 // 25 for k in range(25)]).max()
    assert error <= (1 if codec == "mpeg4" else 0)  # MPEG-4 part 2 drifts a grey level or two even at qscale 1


def test_variable_frame_rate_clip(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    write_video(path, 10, 25, pts_ms=[0, 40, 80, 200, 210, 220, 500, 540, 580, 620])
    frames = video.read_frames(path)
    # Output k shows the input frame on screen at k * 40 ms; the last one lasts 40 ms, so the clip ends at 660 ms.
    assert [frame_index(f) for f in frames] == [0, 1, 2, 2, 2, 3, 5, 5, 5, 5, 5, 5, 5, 6, 7, 8, 9]


# A keyframe every 10 frames, with B-frames: iter_frames(start=...) has keyframes to seek to.
SEEKABLE = {"g": "10", "bf": "2"}


def _seekable_clip(kind: str, tmp_path: Path) -> Path:
    if kind == "grid":
        return CLIPS[0]  # MPEG-1 in a program stream: a keyframe every 12 frames; the demuxer lands a GOP late
    path = tmp_path / f"{kind}.mp4"
    if kind == "30fps":
        write_video(path, 75, 30, options=SEEKABLE)
    else:  # variable frame rate: irregular steps of 5..90 ms
        write_video(path, 60, 25, pts_ms=np.cumsum(np.random.default_rng(0).integers(5, 90, 60)).tolist(), options=SEEKABLE)
    return path


@pytest.mark.parametrize("kind", ["grid", "30fps", "vfr"])
def test_streaming_from_any_start_matches_the_full_decode(kind: str, tmp_path: Path) -> None:
    path = _seekable_clip(kind, tmp_path)
    full = video.read_frames(path)
    for start in range(len(full) + 2):
        got = list(itertools.islice(video.iter_frames(path, start=start), 3))
        assert len(got) == len(full[start : start + 3]), start
        for offset, frame in enumerate(got):
            np.testing.assert_array_equal(frame, full[start + offset], err_msg=f"{kind}: start {start} + {offset}")
    assert len(list(video.iter_frames(path, start=len(full) - 4))) == 4  # and it ends where the clip does


def test_streaming_from_a_late_start_decodes_only_from_the_keyframe_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _seekable_clip("30fps", tmp_path)  # 75 frames at 30 fps = 63 outputs at 25 fps; keyframes every 10 frames
    decoded = []
    real_decode = video._decode

    def counting_decode(container, stream):
        for frame in real_decode(container, stream):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video, "_decode", counting_decode)
    tail = list(video.iter_frames(path, start=55))  # 55/25 s = source frame 66: decoding starts at keyframe 60
    assert len(tail) == 8
    assert len(decoded) <= 1 + 15, decoded  # the first frame (for the time origin), then keyframe 60 to the end
    decoded.clear()
    assert len(list(video.iter_frames(path))) == 63 and len(decoded) == 75


def test_rotation_metadata_gives_upright_frames(tmp_path: Path) -> None:
    path = tmp_path / "rot.mp4"
    write_video(path, 5, 25, rotation=90)  # stored 64x48, displayed rotated 90 degrees counter-clockwise
    info = video.probe(path, min_side=16)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    frames = video.read_frames(path)
    assert frames.shape == (5, 64, 48, 3)
    marker = np.argwhere(frames[0].min(axis=-1) > 200)
    assert marker[:, 0].min() >= 56 and marker[:, 1].max() <= 7  # the top-left marker is now bottom-left


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoError) as err:
        video.probe(path)
    assert err.value.reason == "not_a_video"
    with pytest.raises(VideoError) as err:
        next(video.iter_frames(path))
    assert err.value.reason == "not_a_video"


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as err:
        video.probe(tmp_path / "nope.mp4")
    assert err.value.reason == "not_found"
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError) as err:
        video.probe(tmp_path / "empty.mp4")
    assert err.value.reason == "zero_length"


def test_truncated_mpeg_decodes_the_intact_part(tmp_path: Path) -> None:
    # MPEG program streams have no index: a cut file is a shorter valid stream, decoded up to the cut.
    path = tmp_path / "cut.mpg"
    path.write_bytes(CLIPS[0].read_bytes()[: 452608 // 2])
    info = video.probe(path)
    frames = video.read_frames(path)
    assert 30 <= len(frames) <= 45 and info.duration < 2.0
    assert len(video.read_audio(path)) > 16000


def test_truncated_mp4_is_corrupt(tmp_path: Path) -> None:
    # mp4 keeps its index (moov) at the end: a cut file cannot be opened, and starts like an mp4 -> "corrupt".
    whole = tmp_path / "whole.mp4"
    write_video(whole, 60, 30, audio_seconds=2.0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    with pytest.raises(VideoError) as err:
        video.read_frames(cut)
    assert err.value.reason == "corrupt"


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    write_video(path, 10, 25)
    info = video.probe(path, min_side=16)
    assert info.has_video and not info.has_audio and info.audio_codec is None
    with pytest.raises(VideoError) as err:
        video.probe(path, min_side=16, require_audio=True)
    assert err.value.reason == "no_audio_stream"
    with pytest.raises(VideoError) as err:
        video.read_audio(path)
    assert err.value.reason == "no_audio_stream"
    clip = video.read_clip(path, require_audio=False, min_side=16)
    assert clip.audio is None and clip.frames.shape == (10, 48, 64, 3)


def test_size_and_duration_limits(tmp_path: Path) -> None:
    path = tmp_path / "small.mp4"
    write_video(path, 10, 25)
    with pytest.raises(VideoError) as err:
        video.probe(path)  # 64x48 is below the default min_side
    assert err.value.reason == "too_small"
    with pytest.raises(VideoError) as err:
        video.probe(path, min_side=16, max_side=32)
    assert err.value.reason == "too_large"
    with pytest.raises(VideoError) as err:
        video.probe(path, min_side=16, max_duration=0.2)
    assert err.value.reason == "too_large"


def test_video_error_pickles_with_its_reason() -> None:
    err = pickle.loads(pickle.dumps(VideoError("corrupt", "bad packet")))
    assert (err.reason, err.detail, str(err)) == ("corrupt", "bad packet", "corrupt: bad packet")
    with pytest.raises(ValueError):
        VideoError("exploded")


# --- audio features -------------------------------------------------------------------------------------------


def test_log_mel_of_440hz_peaks_in_its_band() -> None:
    t = np.arange(2 * 16000) / 16000
    feats = audio.frame_features(0.5 * np.sin(2 * np.pi * 440 * t), 16000, 50)
    assert feats.shape == (50, 80)
    centres = audio.mel_edges(80, 16000)[1:-1].numpy()
    peak = int(np.argmax(feats[5:-5].mean(axis=0)))
    assert peak == int(np.argmin(np.abs(centres - 440)))
    assert np.ptp(feats[5:-5, peak]) < 0.1  # steady tone, steady feature
    assert (audio.mel_filterbank(80, 1024, 16000).sum(dim=1) > 0).all()  # no empty filter


def test_features_pad_short_audio_and_take_n_mels() -> None:
    feats = audio.frame_features(np.zeros(8000, np.float32), 16000, 25, n_mels=40)
    assert feats.shape == (25, 40)
    np.testing.assert_allclose(feats, np.log(audio.LOG_FLOOR), rtol=1e-5)


def test_25fps_rows_average_three_20ms_rows() -> None:
    rows = np.arange(20, dtype=np.float64)[:, None] ** 2
    out = audio.to_frame_rate(torch.tensor(rows), 9, 25).numpy()[:, 0]
    i = np.arange(9)
    np.testing.assert_allclose(out, 0.25 * (2 * i) ** 2 + 0.5 * (2 * i + 1) ** 2 + 0.25 * (2 * i + 2) ** 2, rtol=1e-6)


def test_deepspeech_import(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(75, 29)).astype(np.float32)
    txt = tmp_path / "clip_deepspeech.txt"
    np.savetxt(txt, logits)  # DINet's preprocessing format
    np.testing.assert_allclose(audio.load_deepspeech(txt, 75), logits, rtol=1e-6)
    np.save(tmp_path / "clip.npy", logits)
    assert audio.load_deepspeech(tmp_path / "clip.npy", 75).shape == (75, 29)
    with pytest.raises(ValueError, match="74 DeepSpeech rows but the video has 75 frames"):
        np.savetxt(txt, logits[:74])
        audio.load_deepspeech(txt, 75)
    padded = audio.load_deepspeech(txt, 75, tolerance=1)
    np.testing.assert_allclose(padded[-1], padded[-2])
    with pytest.raises(ValueError, match=r"shape \(frames, 29\)"):
        np.savetxt(txt, logits[:, :20])
        audio.load_deepspeech(txt, 75)


# --- OpenFace CSV ---------------------------------------------------------------------------------------------


def test_openface_csv_import(tmp_path: Path) -> None:
    header = ["frame", "face_id", "timestamp", "confidence", "success", "gaze_0_x"]
    header += [f"x_{k}" for k in range(68)] + [f"y_{k}" for k in range(68)] + ["X_0"]

    def row(frame: int, face: int, confidence: float, success: int, offset: float) -> list[str]:
        xs = [f"{offset + k:.1f}" for k in range(68)]
        ys = [f"{offset + 100 + k:.1f}" for k in range(68)]
        lead = [str(frame), str(face), f"{(frame - 1) * 0.04:.3f}", str(confidence), str(success), "0.1"]
        return lead + xs + ys + ["9"]

    rows = [row(1, 0, 0.98, 1, 10), row(2, 0, 0.0, 0, 0), row(4, 0, 0.5, 1, 20), row(4, 1, 0.9, 1, 30)]
    path = tmp_path / "clip.csv"
    path.write_text("\n".join(", ".join(r) for r in [header, *rows]) + "\n")  # OpenFace puts a space after commas
    faces = landmarks.read_openface_csv(path)
    assert [len(f) for f in faces] == [1, 0, 0, 2]  # failed frame, absent frame, two faces
    assert faces[0][0].shape == (68, 2) and faces[0][0].dtype == np.float32
    np.testing.assert_allclose(faces[0][0][5], [15.0, 115.0])
    np.testing.assert_allclose([f[0] for f in faces[3]], [[20.0, 120.0], [30.0, 130.0]])  # both, for the tracker to choose
    assert len(landmarks.read_openface_csv(path, n_frames=6)) == 6
    # Two people in every frame, the more confident one alternating: the tracker keeps the subject, A, throughout.
    from julnet.config import PreprocessConfig
    from julnet.data.track import track_faces

    two = [row(f, face, 0.9 if (f + face) % 2 else 0.5, 1, 10 + f if face == 0 else 300) for f in range(1, 7) for face in (0, 1)]
    path.write_text("\n".join(", ".join(r) for r in [header, *two]) + "\n")
    track = track_faces(landmarks.read_openface_csv(path), [0], PreprocessConfig())
    assert track.multiple_faces and [float(points[0][0]) for points in track.landmarks] == [11.0, 12.0, 13.0, 14.0, 15.0, 16.0]
    (tmp_path / "bad.csv").write_text("frame, success, x_0\n1, 1, 3\n")
    with pytest.raises(ValueError, match="not an OpenFace landmark CSV"):
        landmarks.read_openface_csv(tmp_path / "bad.csv")
