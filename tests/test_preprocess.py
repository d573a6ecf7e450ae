from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from julnet import storage
from julnet.config import load_config
from julnet.data import audio as audio_features
from julnet.data.manifest import read_manifest
from julnet.data.preprocess import run
from julnet.data.video import read_audio, read_frames
from julnet.face import mouth_box
from tests.conftest import GRID_CLIPS, REPO, run_cli


def _video_only_copy(src: Path, dst: Path) -> None:
    """A real face video with its audio track removed."""
    frames = read_frames(src)
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory) -> Path:
    """Two real clips plus a corrupt file, a video without audio and a non-video file."""
    raw = tmp_path_factory.mktemp("raw")
    for clip in GRID_CLIPS:
        shutil.copy(clip, raw / clip.name)
    (raw / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + os.urandom(4000))
    _video_only_copy(GRID_CLIPS[0], raw / "silent.mp4")
    (raw / "notes.txt").write_text("not a video\n")
    return raw


@pytest.fixture(scope="module")
def s3_dataset(raw_folder, s3_server, ray_local) -> tuple[str, dict]:
    """The raw folder uploaded to the S3 test server and preprocessed there by the Ray job."""
    from ray_jobs.preprocess import main

    bucket = s3_server.make_bucket()
    for path in sorted(raw_folder.iterdir()):
        storage.upload_file(path, f"{bucket}/raw/{path.name}")
    assert main(["--config", "tiny", "--input", f"{bucket}/raw", "--output", f"{bucket}/data", "--set", "preprocess.test_fraction=0"]) == 0
    return f"{bucket}/data", json.loads(storage.read_text(f"{bucket}/data/report.json"))


def test_two_real_clips_end_to_end_through_s3(s3_dataset):
    data, report = s3_dataset
    manifest = read_manifest(f"{data}/manifest.json")
    assert report["accepted"] == 2
    assert sorted(v.id for v in manifest.videos) == ["bbaf2n", "id2_vcd_swwp2s"]
    assert all(v.frames == 75 and v.fps == 25 and v.duration == 3.0 and v.source_size == (360, 288) for v in manifest.videos)
    for shard in manifest.shards:
        assert storage.exists(f"{data}/{shard.name}") and shard.bytes > 0
    assert manifest.settings["crop_height"] == 416 and manifest.code_version


def test_bad_inputs_are_rejected_with_distinct_reasons(s3_dataset):
    _, report = s3_dataset
    reasons = {Path(r["source"]).name: r["reason"] for r in report["rejected"]}
    assert reasons == {"corrupt.mp4": "corrupt", "silent.mp4": "no_audio_stream", "notes.txt": "not_a_video"}


def test_shard_rows_align_frames_landmarks_and_audio(s3_dataset):
    data, _ = s3_dataset
    manifest = read_manifest(f"{data}/manifest.json")
    top, left, side = mouth_box(416, 320)
    for video in manifest.videos:
        with storage.open_input(f"{data}/{video.shard}") as stream:
            table = pq.ParquetFile(stream).read_row_groups(video.row_groups)
        assert table.column("video_id").to_pylist() == [video.id] * 75
        assert table.column("frame_index").to_pylist() == list(range(75))
        np.testing.assert_allclose(table.column("timestamp").to_numpy(), np.arange(75) / 25)
        points = np.asarray(table.column("landmarks").to_pylist(), np.float32).reshape(75, 68, 2)
        assert np.isfinite(points).all()
        assert (points[..., 0] >= 0).all() and (points[..., 0] < 320).all()
        assert (points[..., 1] >= 0).all() and (points[..., 1] < 416).all()
        mouth = points[:, 48:68]
        assert (mouth[..., 0] > left).all() and (mouth[..., 0] < left + side).all()
        assert (mouth[..., 1] > top).all() and (mouth[..., 1] < top + side).all(), "mouth inside the mouth box in every frame"
        first = cv2.imdecode(np.frombuffer(table.column("jpeg")[0].as_py(), np.uint8), cv2.IMREAD_COLOR)
        assert first.shape == (416, 320, 3)
        windows = np.asarray(table.column("audio").to_pylist(), np.float32).reshape(75, 80, 5)
        clip = next(c for c in GRID_CLIPS if c.stem == video.id)
        expected = audio_features.frame_features(read_audio(clip, 16000, start=0.0), 16000, 75, 25, 80)
        np.testing.assert_allclose(windows[:, :, 2], expected, atol=1e-4)
        np.testing.assert_allclose(windows[10, :, 0], expected[8], atol=1e-4)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_writes_nothing_new_and_a_killed_run_resumes_to_the_same_manifest(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for clip in GRID_CLIPS:
        shutil.copy(clip, raw / clip.name)
    shutil.copy(GRID_CLIPS[0], raw / "zz_copy.mpg")
    overrides = ["preprocess.shard_target_mb=0.1", "preprocess.test_fraction=0"]
    cfg = load_config("tiny", overrides)

    clean = tmp_path / "clean"
    manifest, report = run(str(raw), str(clean), cfg)
    assert report.accepted == 3 and len(manifest.shards) == 3
    before = _snapshot(clean)
    run(str(raw), str(clean), cfg)
    assert _snapshot(clean) == before, "a re-run on the same input writes nothing"

    killed = tmp_path / "killed"
    args = ["preprocess", "--config", "tiny", "--input", str(raw), "--output", str(killed)]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.Popen(
        [sys.executable, "-m", "julnet", *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list((killed / "shards").glob("part-*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists(), "killed before the manifest was committed"
    assert len(list((killed / "shards").glob("part-*.json"))) < 3
    run_cli(*args)
    assert (killed / "manifest.json").read_text() == (clean / "manifest.json").read_text()
    assert sorted(p.name for p in (killed / "shards").iterdir()) == sorted(p.name for p in (clean / "shards").iterdir())


def test_progress_lines_within_a_shard_with_rate_and_eta(tmp_path):
    """One clip, one shard: progress lines while its frames go through landmarks, each with a rate and an ETA,
    each a line of its own (no carriage-return redraws), then the shard's and the run's final lines."""
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(GRID_CLIPS[0], raw / GRID_CLIPS[0].name)
    proc = subprocess.run(
        [sys.executable, "-m", "julnet", "preprocess", "--config", "tiny", "--input", str(raw), "--output", str(tmp_path / "out")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "JULNET_PROGRESS_EVERY_S": "0"}, capture_output=True, timeout=300,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr[-3000:]
    assert "\r" not in stderr
    lines = stderr.splitlines(keepends=True)
    periodic = re.compile(r"\[preprocess part-\w+\] (\d+)/~?(\d+) frames, video 1/1 bbaf2n \| \d+\.?\d* frames/(s|min|h) \| eta \d+:\d\d:\d\d\n$")
    counts = [(int(m[1]), int(m[2])) for line in lines if (m := periodic.search(line))]
    assert len(counts) >= 10 and counts[0][0] < counts[0][1], "lines while the video is processed, not only after"
    assert [done for done, _ in counts] == sorted(done for done, _ in counts)
    frames = read_manifest(str(tmp_path / "out" / "manifest.json")).videos[0].frames
    assert frames - 3 <= counts[-1][0] < frames and all(abs(total - frames) <= 3 for _, total in counts), counts[-3:]
    assert any(re.search(rf"\[preprocess part-\w+\] done: {frames} frames in \d+:\d\d:\d\d \| .*frames/.*1 accepted, 0 rejected\n$", line) for line in lines)
    assert any(re.search(r"\[preprocess\] done: 1 videos in .* 1 shards: 1 accepted, 0 rejected\n$", line) for line in lines)


def test_cli_fails_only_when_nothing_usable_came_out(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "readme.txt").write_text("nothing here")
    proc = run_cli("preprocess", "--config", "tiny", "--input", str(raw), "--output", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1 and "no usable video" in proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["accepted"] == 0 and report["rejected"][0]["reason"] == "not_a_video"


def test_missing_input_is_a_clear_error(tmp_path):
    proc = run_cli("preprocess", "--config", "tiny", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "no input files" in proc.stderr


def _openface_csv(path: Path, points: list[np.ndarray]) -> None:
    """Write landmarks the way OpenFace's FeatureExtraction does (", " separators, 1-based frames)."""
    header = ["frame", "face_id", "timestamp", "confidence", "success"]
    header += [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    lines = [", ".join(header)]
    for i, p in enumerate(points):
        lines.append(", ".join([str(i + 1), "0", f"{i / 25:.3f}", "0.98", "1", *(f"{v:.3f}" for v in p[:, 0]), *(f"{v:.3f}" for v in p[:, 1])]))
    path.write_text("\n".join(lines) + "\n")


def test_listing_with_openface_and_deepspeech_sidecars(tmp_path):
    """DINet-style inputs: landmarks from OpenFace CSVs, audio features from DeepSpeech, via a .jsonl listing."""
    from julnet.data.landmarks import DlibBackend

    clip = GRID_CLIPS[0]
    frames = read_frames(clip)
    backend = DlibBackend()
    points = [backend.detect(f) for f in frames]
    shifted = [p + np.float32([3.0, 0.0]) for p in points]  # distinguishable from what dlib would find
    _openface_csv(tmp_path / "clip.csv", shifted)
    deepspeech = np.random.default_rng(0).normal(size=(75, 29)).astype(np.float32)
    np.save(tmp_path / "clip.deepspeech.npy", deepspeech)
    (tmp_path / "videos.jsonl").write_text(
        json.dumps({"video": str(clip), "id": "speaker1_take1", "identity": "speaker1", "openface_csv": "clip.csv", "deepspeech": "clip.deepspeech.npy"}) + "\n"
    )
    cfg = load_config("tiny", ["audio.features=deepspeech", "preprocess.landmarks=openface", "preprocess.test_fraction=0"])
    manifest, report = run(str(tmp_path / "videos.jsonl"), str(tmp_path / "out"), cfg)
    assert report.accepted == 1 and not report.rejected
    video = manifest.videos[0]
    assert (video.id, video.identity, video.frames) == ("speaker1_take1", "speaker1", 75)
    assert manifest.settings["audio_dim"] == 29
    table = pq.read_table(tmp_path / "out" / video.shard)
    windows = np.asarray(table.column("audio").to_pylist(), np.float32).reshape(75, 29, 5)
    np.testing.assert_array_equal(windows[:, :, 2], deepspeech)


def test_rotated_30fps_video_is_accepted_with_its_fixes(tmp_path):
    """A phone-style upload: 30 fps, stored sideways with a display rotation. It is resampled and turned upright."""
    frames = read_frames(GRID_CLIPS[0])
    sideways = np.ascontiguousarray(np.rot90(frames, k=1, axes=(1, 2)))
    samples = read_audio(GRID_CLIPS[0], 16000, start=0.0)
    path = tmp_path / "raw" / "phone.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = sideways.shape[2], sideways.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        stream.set_display_rotation(-90)
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for i in range(90):  # 3 s at 30 fps, sampled from the 25 fps source
            out.mux(stream.encode(av.VideoFrame.from_ndarray(sideways[min(74, i * 25 // 30)], format="rgb24")))
        out.mux(stream.encode())
        pcm = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="fltp", layout="mono")
        pcm.sample_rate = 16000
        out.mux(sound.encode(pcm))
        out.mux(sound.encode())
    manifest, report = run(str(path.parent), str(tmp_path / "out"), load_config("tiny", ["preprocess.test_fraction=0"]))
    assert report.accepted == 1, report.rejected
    video = manifest.videos[0]
    assert video.frames == 75 and video.source_fps == 30.0 and video.source_size == (360, 288)
    assert sorted(video.fixes) == ["resampled_fps", "rotated"]
    points = np.asarray(pq.read_table(tmp_path / "out" / video.shard).column("landmarks").to_pylist()).reshape(75, 68, 2)
    top, left, side = mouth_box(416, 320)
    assert (points[:, 48:68, 1] > top).all() and (points[:, 48:68, 1] < top + side).all()


def test_a_video_without_a_face_is_rejected_as_no_face(tmp_path):
    path = tmp_path / "raw" / "wall.mp4"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for _ in range(25):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (128, 160, 3), dtype=np.uint8), format="rgb24")))
        out.mux(stream.encode())
        tone = np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000).astype(np.float32)[None]
        pcm = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        pcm.sample_rate = 16000
        out.mux(sound.encode(pcm))
        out.mux(sound.encode())
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, report = run(str(path.parent), str(tmp_path / "out"), load_config("tiny"))
        assert torch.get_num_threads() == 2, "preprocessing in this process changed its torch thread count"
    finally:
        torch.set_num_threads(threads)
    assert report.accepted == 0 and [r.reason for r in report.rejected] == ["no_face"]
