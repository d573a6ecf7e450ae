"""`julnet generate`: a GRID clip dubbed with another clip's audio, ping-pong looping, and bad inputs."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from julnet.config import load_config
from julnet.data.video import iter_frames, read_audio, read_frames
from julnet.errors import BadVideoError, ModelNotFoundError, NoAudioStreamError, SilentAudioError, UnsupportedModelError
from julnet.inference import dub, load_model, pingpong
from tests.conftest import GRID_CLIPS, run_cli

VIDEO, SPEECH = GRID_CLIPS  # bbaf2n.mpg dubbed with the audio of id2_vcd_swwp2s.mpg
# Outside the repainted mouth region plus this margin (feathering stays inside it; H.264 blocks and its deblocking
# filter reach a little past it), the output must match the decoded source up to codec error, eyes included.
MARGIN = 16
MEAN_TOL, P99_TOL = 3.0, 16.0  # 8-bit levels; libx264 at crf 18 with 4:2:0 chroma


@pytest.fixture(scope="module")
def model(model_dir: Path):
    return load_model(model_dir)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def _write_video(path: Path, frames: np.ndarray) -> None:
    """Video only (no audio), near-lossless."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        s.options = {"crf": "0"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_grid_clip_dubbed_with_another_clips_audio(model, tmp_path: Path) -> None:
    out, heat, report = tmp_path / "out.mp4", tmp_path / "heat.mp4", tmp_path / "frames.json"
    result = dub(VIDEO, SPEECH, model, out, uncertainty_video=heat, report=report)
    assert _leftovers(tmp_path) == ["frames.json", "heat.mp4", "out.mp4"]  # no temporary files left

    expected = len(read_audio(SPEECH)) / 16000 * 25
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (360, 288)
        assert v.average_rate == 25
        assert c.streams.audio, "no audio stream in the output"
    frames = read_frames(out)
    assert abs(len(frames) - expected) <= 1
    assert abs(len(read_audio(out)) / 16000 - len(frames) / 25) < 0.05  # the muxed audio spans the video
    assert frames.shape[1:] == (288, 360, 3)

    written = json.loads(report.read_text())
    assert written["settings"] == load_config("tiny").generate.model_dump()  # the model config's generate section
    entries = written["frames"]
    assert len(entries) == len(frames) == result["summary"]["frames"]
    assert all(e["face_found"] and 0 <= e["confidence"] <= 1 for e in entries)
    speed = written["summary"]  # the networks' time is part of the generation pass, which is part of the whole call
    assert 0 < speed["model_seconds"] and speed["model_fps"] > speed["generate_fps"] > speed["end_to_end_fps"] > 0

    source = read_frames(VIDEO)
    diffs = []
    changed = 0.0
    for e, got in zip(entries, frames):
        want = source[e["source_frame"]].astype(np.int16)
        x0, y0, x1, y1 = e["mouth_box"]
        bx0, by0, bx1, by1 = e["box"]
        assert bx0 < x0 < x1 < bx1 and by0 < y0 < y1 < by1, "the mouth region lies inside the crop box"
        outside = np.ones(got.shape[:2], bool)
        outside[max(0, y0 - MARGIN) : y1 + MARGIN, max(0, x0 - MARGIN) : x1 + MARGIN] = False
        diffs.append(np.abs(got.astype(np.int16) - want)[outside])
        inside = np.abs(got.astype(np.int16) - want)[y0 + 12 : y1 - 12, x0 + 12 : x1 - 12]
        changed = max(changed, float(inside.mean()))
    d = np.concatenate(diffs)
    # An untrained model's crop differs from the source everywhere; none of it outside the mouth region is pasted.
    assert d.mean() < MEAN_TOL and np.percentile(d, 99) < P99_TOL, (d.mean(), np.percentile(d, 99))
    assert changed > 2 * MEAN_TOL  # the mouth itself was repainted (a 1-step model paints it badly)
    assert len(read_frames(heat)) == len(frames)


def test_short_video_ping_pongs_and_audio_is_resampled(model, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    _write_video(short, np.stack([f.copy() for _, f in zip(range(8), iter_frames(VIDEO))]))
    speech = tmp_path / "speech8k.wav"  # 8 kHz: resampled to 16 kHz for the features
    _write_wav(speech, read_audio(SPEECH, 8000)[: 8000 * 6 // 5], 8000)  # 1.2 s = 30 frames
    out = tmp_path / "out.mp4"
    # Blocks of 4 frames: the backward sweeps seek; a confidence threshold of 1 flags every frame.
    result = dub(short, speech, model, out, overrides=["generate.batch_frames=4", "generate.confidence_threshold=1"])
    assert result["settings"]["batch_frames"] == 4
    entries = result["frames"]
    assert all(e["low_confidence"] for e in entries) and result["summary"]["low_confidence_frames"] == 30
    assert len(entries) == 30 and len(read_frames(out)) == 30
    assert [e["source_frame"] for e in entries] == [pingpong(j, 8) for j in range(30)]
    assert [pingpong(j, 4) for j in range(8)] == [0, 1, 2, 3, 2, 1, 0, 1]
    assert result["summary"]["looped"]


def test_frames_where_tracking_was_lost_are_flagged_in_the_report(model, tmp_path: Path) -> None:
    frames = np.stack([f.copy() for _, f in zip(range(8), iter_frames(VIDEO))])
    frames[3:5] = 128  # two flat grey frames: the subject is lost there, and found again after them
    clip = tmp_path / "gap.mp4"
    _write_video(clip, frames)
    speech = tmp_path / "speech.wav"
    _write_wav(speech, read_audio(SPEECH)[: 16000 * 2 // 5], 16000)  # 0.4 s = 10 frames
    result = dub(clip, speech, model, tmp_path / "out.mp4")
    entries = result["frames"]
    assert [e["source_frame"] for e in entries] == [pingpong(j, 8) for j in range(10)]
    assert [e["tracking_lost"] for e in entries] == [e["source_frame"] in (3, 4) for e in entries]
    assert all(e["face_found"] != e["tracking_lost"] and (e["sigma_mean"] is None) == e["tracking_lost"] for e in entries)
    assert result["summary"]["tracking_lost_frames"] == result["summary"]["frames_without_face"] == 2


def test_bad_inputs_each_give_their_own_error_and_no_output(model, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # an empty registry
    out = tmp_path / "out" / "dubbed.mp4"
    out.parent.mkdir()
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n")
    video_only = tmp_path / "video_only.mp4"
    _write_video(video_only, np.stack([f.copy() for _, f in zip(range(3), iter_frames(VIDEO))]))
    silence = tmp_path / "silence.wav"
    _write_wav(silence, np.zeros(16000), 16000)

    cases = [
        (BadVideoError, "unreadable video", dict(video_path=not_video, audio_path=SPEECH, model=model)),
        (NoAudioStreamError, "no audio stream", dict(video_path=VIDEO, audio_path=video_only, model=model)),
        (SilentAudioError, "no speech", dict(video_path=VIDEO, audio_path=silence, model=model)),
        (ModelNotFoundError, "model not found", dict(video_path=VIDEO, audio_path=SPEECH, model=tmp_path / "missing")),
        (ModelNotFoundError, "model not found: models:/julnet@champion", dict(video_path=VIDEO, audio_path=SPEECH, model="models:/julnet@champion")),
        (UnsupportedModelError, "scheme 'http:'", dict(video_path=VIDEO, audio_path=SPEECH, model="http://example.com/model")),
    ]
    for error, words, kwargs in cases:
        with pytest.raises(error, match=words) as info:
            dub(out_path=out, report=tmp_path / "out" / "r.json", **kwargs)
        assert "\n" not in str(info.value)
        assert _leftovers(out.parent) == [], error

    proc = run_cli("generate", "--video", str(VIDEO), "--audio", str(silence), "--model", str(model_dir), "--out", str(out), check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("julnet generate: error: no speech in")
    assert _leftovers(out.parent) == []


def test_settings_come_from_the_model_config_and_old_checkpoints_load(model_dir: Path, tmp_path: Path) -> None:
    import torch

    from julnet.config import ConfigError
    from julnet.models.checkpoint import STATE_FILE, latest_checkpoint

    state = torch.load(latest_checkpoint(model_dir / "checkpoints") / STATE_FILE, weights_only=True)
    state["config"]["generate"]["confidence_threshold"] = 1.0
    custom = tmp_path / "custom.pt"
    torch.save(state, custom)
    del state["config"]["generate"]  # a checkpoint saved before the generate section existed
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert load_model(old)[0].generate == load_config("tiny").generate

    short, speech = tmp_path / "short.mp4", tmp_path / "speech.wav"
    _write_video(short, np.stack([f.copy() for _, f in zip(range(3), iter_frames(VIDEO))]))
    _write_wav(speech, read_audio(SPEECH)[: 16000 * 6 // 5], 16000)  # 1.2 s = 30 frames
    result = dub(short, speech, load_model(custom), tmp_path / "out.mp4")
    assert result["settings"]["confidence_threshold"] == 1.0 and all(e["low_confidence"] for e in result["frames"])
    with pytest.raises(ConfigError, match="only generate"):
        dub(short, speech, load_model(custom), tmp_path / "bad.mp4", overrides=["train.seed=1"])
    proc = run_cli("generate", "--video", str(short), "--audio", str(speech), "--model", str(custom), "--out", str(tmp_path / "bad.mp4"),
                   "--set", "generate.feather=2", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("julnet generate: error: generate.feather:")
    assert not (tmp_path / "bad.mp4").exists()


def test_codec_choice_prefers_h264_aac_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from julnet import inference

    assert inference.choose_codecs() == ("libx264", "aac")  # this machine's PyAV wheel has both encoders
    monkeypatch.setattr(av.codec, "codecs_available", av.codec.codecs_available - {"libx264", "h264"})
    assert inference.choose_codecs() == ("mpeg4", "aac")
