"""`julnet generate` rough edges (issues 10 and 32): Ray run directories as --model, output folders, odd frame sizes,
speech too short to be a word, and files that are no checkpoint."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from julnet.config import load_config
from julnet.data.video import iter_frames, read_audio
from julnet.errors import BadOutputError, ShortAudioError, UnsupportedModelError
from julnet.inference import dub, load_model
from julnet.models.build import build_models, build_optimizers
from julnet.models.checkpoint import checkpoint_dir, load_checkpoint, locate_checkpoint, save_checkpoint, training_state, write_checkpoint_files
from tests.conftest import GRID_CLIPS, run_cli
from tests.test_generate import _write_video, _write_wav

VIDEO, SPEECH = GRID_CLIPS
# (stage, steps) as train_run leaves them with keep_last=2: the final checkpoint of frame, the last two of clip. The
# curriculum is frame then clip, so "clip" is last although it sorts first and its step numbers are lower.
RAY_STEPS = (("frame", (6,)), ("clip", (1, 2)))


def _states(stage_steps: tuple[tuple[str, tuple[int, ...]], ...]):
    """(stage, step, state) of the tiny model; the generator's output bias holds the step, to tell them apart."""
    cfg = load_config("tiny")
    models = build_models(cfg)
    opts = build_optimizers(cfg, models)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for stage, steps in stage_steps:
        for step in steps:
            with torch.no_grad():
                models.talking_face.generator.face_decoder.to_image.bias.fill_(step / 100)
            yield stage, step, training_state(cfg, models, opts, scaler, step, stage)


def _marker(face) -> int:
    return round(float(face.generator.face_decoder.to_image.bias[0].detach()) * 100)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory laid out as distributed.train_run leaves it under <storage>/<name>/ (Ray's experiment folder,
    with its snapshot and storage marker): a folder per stage of step-NNNNNNNN checkpoints written by
    write_checkpoint_files (as _report does), a DONE.json per finished stage, and the loss curves."""
    run = tmp_path_factory.mktemp("storage") / "job1"
    for stage, step, state in _states(RAY_STEPS):
        folder = checkpoint_dir(run / stage, step)
        folder.mkdir(parents=True)
        write_checkpoint_files(folder, state)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    (run / ".validate_storage_marker").write_text("")
    (run / "frame" / "DONE.json").write_text(json.dumps({"checkpoint": str(run / "frame" / "step-00000006"), "step": 6}))
    (run / "loss_curves.png").write_bytes(b"\x89PNG")
    return run


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a 3-frame GRID video, 0.4 s of its speech = 10 output frames)."""
    folder = tmp_path_factory.mktemp("clip")
    video, speech = folder / "short.mp4", folder / "speech.wav"
    _write_video(video, np.stack([f.copy() for _, f in zip(range(3), iter_frames(VIDEO))]))
    _write_wav(speech, read_audio(SPEECH)[16000 : 16000 + 6400], 16000)
    return video, speech


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_ray_run_directory_resolves_to_the_newest_checkpoint_of_its_last_stage(ray_run: Path, tmp_path: Path) -> None:
    assert locate_checkpoint(ray_run) == ray_run / "clip" / "step-00000002"
    assert locate_checkpoint(ray_run / "clip") == ray_run / "clip" / "step-00000002"  # a stage folder: its newest
    cfg, face = load_model(ray_run)  # what generate, evaluate, batch and pyfunc call
    assert face.trained_stage == "clip" and _marker(face) == 2
    assert load_checkpoint(ray_run)["step"] == 2  # --init takes the same run directory

    running = tmp_path / "job2"  # the clip stage has not written a checkpoint yet
    shutil.copytree(ray_run / "frame", running / "frame")
    (running / "clip").mkdir()
    assert locate_checkpoint(running) == running / "frame" / "step-00000006"

    local = tmp_path / "local"  # what julnet train leaves: <out>/checkpoints/step-N
    for _, step, state in _states((("frame", (1, 4)),)):
        save_checkpoint(local / "checkpoints", state, keep_last=3)
    assert locate_checkpoint(local) == local / "checkpoints" / "step-00000004"


def test_generate_takes_a_ray_run_directory_and_creates_every_missing_output_folder(ray_run: Path, clip: tuple[Path, Path], tmp_path: Path) -> None:
    video, speech = clip
    out, heat, report = tmp_path / "a" / "b" / "out.mp4", tmp_path / "c" / "d" / "sigma.mp4", tmp_path / "e" / "f" / "frames.json"
    run_cli("generate", "--video", str(video), "--audio", str(speech), "--model", str(ray_run), "--out", str(out),
            "--uncertainty-video", str(heat), "--report", str(report))
    assert _files(tmp_path) == ["a/b/out.mp4", "c/d/sigma.mp4", "e/f/frames.json"]  # no temporary files left
    assert json.loads(report.read_text())["summary"]["frames"] == 10


def test_an_output_under_a_regular_file_fails_at_once_with_one_line(clip: tuple[Path, Path], tmp_path: Path) -> None:
    video, speech = clip
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder\n")
    for key in ("out_path", "uncertainty_video", "report"):
        paths = {"out_path": tmp_path / "ok" / "out.mp4", key: blocker / "sub" / "x.out"}
        # A missing model and video: the output check comes first, before any loading or decoding.
        with pytest.raises(BadOutputError, match=f"cannot create the folder of the .* {blocker} is a file, not a folder") as info:
            dub(tmp_path / "missing.mp4", speech, tmp_path / "missing-model", **paths)
        assert "\n" not in str(info.value) and info.value.reason == "bad_output"
    assert _files(tmp_path) == ["taken"]

    proc = run_cli("generate", "--video", str(video), "--audio", str(speech), "--model", str(tmp_path / "missing-model"),
                   "--out", str(tmp_path / "out.mp4"), "--report", str(blocker / "r.json"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"julnet generate: error: cannot create the folder of the report {blocker / 'r.json'}: {blocker} is a file, not a folder")
    assert _files(tmp_path) == ["taken"]


def test_an_odd_sized_source_gives_a_yuv420p_video_with_even_sides(ray_run: Path, clip: tuple[Path, Path], tmp_path: Path) -> None:
    _, speech = clip
    odd = tmp_path / "odd.mp4"  # 359x287: the GRID frames less their last column and row
    source = np.stack([f[:287, :359].copy() for _, f in zip(range(3), iter_frames(VIDEO))])
    _write_video(odd, source)
    out, heat = tmp_path / "out.mp4", tmp_path / "sigma.mp4"
    result = dub(odd, speech, load_model(ray_run), out, uncertainty_video=heat)
    for path in (out, heat):
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            assert (stream.codec_context.pix_fmt, stream.codec_context.width, stream.codec_context.height) == ("yuv420p", 360, 288)
            frames = list(c.decode(stream))
        assert len(frames) == 10 and all(f.format.name == "yuv420p" and (f.width, f.height) == (360, 288) for f in frames)
    assert result["summary"]["source_size"] == [359, 287] and result["summary"]["output_size"] == [360, 288]  # width, height


def test_speech_shorter_than_min_audio_seconds_is_rejected_before_any_output(ray_run: Path, clip: tuple[Path, Path], tmp_path: Path) -> None:
    from julnet.batch import Pair, dub_pair

    video, speech = clip
    blip = tmp_path / "blip.wav"  # 80 ms: two frames' worth, no word
    _write_wav(blip, read_audio(speech)[:1280], 16000)
    out = tmp_path / "out" / "dubbed.mp4"
    proc = run_cli("generate", "--video", str(video), "--audio", str(blip), "--model", str(ray_run), "--out", str(out), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"julnet generate: error: audio in {blip} is 0.080 s long, shorter than generate.min_audio_seconds=0.2 s")
    assert not out.exists() and _files(tmp_path) == ["blip.wav"]

    model = load_model(ray_run)
    with pytest.raises(ShortAudioError, match="shorter than generate.min_audio_seconds=0.5 s") as info:
        dub(video, speech, model, out, overrides=["generate.min_audio_seconds=0.5"])  # 0.4 s is too short for 0.5
    assert info.value.reason == "short_audio"
    row = dub_pair(Pair("blip", str(video), str(blip)), model, str(tmp_path / "batch"))  # the batch job: a failed row
    assert (row["status"], row["reason"]) == ("failed", "short_audio")
    assert _files(tmp_path) == ["blip.wav"]


def test_a_file_that_is_no_checkpoint_is_called_that_without_torchs_advice(model_dir: Path, tmp_path: Path) -> None:
    from julnet.models.checkpoint import STATE_FILE, latest_checkpoint

    state = (latest_checkpoint(model_dir / "checkpoints") / STATE_FILE).read_bytes()
    files = {
        "notes.txt": (b"some notes, not weights\n", "a text file"),
        "config.yaml": (b"generator:\n  kind: dinet\n", "a text file"),
        "noise.pt": (np.random.default_rng(0).bytes(5000), "binary data in no format torch reads"),
        "cut.pt": (state[: len(state) // 2], "a truncated or damaged zip archive"),
        "empty.pt": (b"", "an empty file"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "a zip, but not torch's")
    files["other.zip"] = (b"", "a zip archive that torch did not write")
    for name, (_, what) in files.items():
        with pytest.raises(UnsupportedModelError) as info:
            load_model(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name} is not a julnet checkpoint ({what})"

    torch.save({"format_version": 2, "where": Path("x")}, tmp_path / "objects.pt")  # a real torch file with a pickled object
    with pytest.raises(UnsupportedModelError) as info:
        load_model(tmp_path / "objects.pt")
    assert str(info.value) == f"{tmp_path / 'objects.pt'}: refused to load: it holds pickled objects, not plain weights (GLOBAL pathlib.PosixPath)"

    out = tmp_path / "out.mp4"
    proc = run_cli("generate", "--video", str(VIDEO), "--audio", str(SPEECH), "--model", str(tmp_path / "config.yaml"), "--out", str(out), check=False)
    assert proc.returncode == 2 and "weights_only" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"julnet generate: error: {tmp_path / 'config.yaml'} is not a julnet checkpoint (a text file)"
    assert not out.exists()
