"""Batch inference (ray_jobs/generate.py): GRID pairs listed in S3, dubbed on a real Ray cluster into S3; resumable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from julnet import storage
from julnet.batch import ManifestError, read_pairs
from julnet.config import load_config
from julnet.data.video import read_audio, read_frames
from ray_jobs.generate import main
from tests.conftest import GRID_CLIPS

VIDEO, SPEECH = GRID_CLIPS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model saved with the project's checkpoint code (inference costs the same as trained)."""
    from julnet.models.build import build_models, build_optimizers
    from julnet.models.checkpoint import save_checkpoint, training_state

    cfg = load_config("tiny", ["train.device=cpu"])
    models = build_models(cfg, pretrained=False)
    state = training_state(cfg, models, build_optimizers(cfg, models), torch.amp.GradScaler("cpu", enabled=False), 0, "frame")
    return save_checkpoint(tmp_path_factory.mktemp("model"), state, keep_last=1)


def _snapshot(s3_server, bucket: str, prefix: str) -> dict[str, tuple[str, object]]:
    """Every object under the prefix: key -> (ETag, LastModified)."""
    listing = s3_server.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listing}


def test_manifest_of_pairs_in_s3_dubbed_across_workers_and_resumed(
    ray_local, s3_server, s3_bucket: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3_bucket.removeprefix("s3://")
    for clip in GRID_CLIPS:
        storage.upload_file(clip, f"{s3_bucket}/in/{clip.name}")
    storage.write_text(f"{s3_bucket}/in/notes.mp4", "this is not a video\n")
    storage.upload_file(checkpoint / "state.pt", f"{s3_bucket}/model/state.pt")
    manifest = f"{s3_bucket}/in/pairs.jsonl"
    storage.write_text(manifest, "\n".join([
        json.dumps({"video": VIDEO.name, "audio": SPEECH.name, "name": "swapped"}),  # relative to the manifest
        "",
        json.dumps({"video": f"{s3_bucket}/in/{SPEECH.name}", "audio": f"{s3_bucket}/in/{VIDEO.name}"}),
        json.dumps({"video": "notes.mp4", "audio": SPEECH.name, "name": "bad"}),
    ]) + "\n")
    out = f"{s3_bucket}/out"
    argv = ["--manifest", manifest, "--out", out, "--model", f"{s3_bucket}/model/state.pt",
            "--workers", "2", "--cpus-per-worker", "1", "--uncertainty-video", "--set", "generate.batch_frames=8"]

    assert main(argv) == 1  # one pair failed
    table = capsys.readouterr().out
    assert "2 done, 1 failed, 0 skipped" in table and "unreadable video s3://" in table

    pairs = {"swapped": (VIDEO, SPEECH), f"{SPEECH.stem}-{VIDEO.stem}": (SPEECH, VIDEO)}
    for name, (video, speech) in pairs.items():
        local = storage.copy_to_local(f"{out}/{name}/dubbed.mp4", tmp_path / name)
        frames = read_frames(local)
        assert abs(len(frames) - len(read_audio(speech)) / 16000 * 25) <= 1
        assert frames.shape[1:] == read_frames(video).shape[1:]
        report = json.loads(storage.read_text(f"{out}/{name}/report.json"))
        assert len(report["frames"]) == report["summary"]["frames"] == len(frames)
        assert report["video"] == f"{s3_bucket}/in/{video.name}" and report["output"] == f"{out}/{name}/dubbed.mp4"
        assert report["settings"]["batch_frames"] == 8
        assert len(read_frames(storage.copy_to_local(f"{out}/{name}/sigma.mp4", tmp_path / name))) == len(frames)
    assert not storage.exists(f"{out}/bad")
    summary = json.loads(storage.read_text(f"{out}/summary.json"))
    assert (summary["pairs"], summary["done"], summary["failed"], summary["skipped"]) == (3, 2, 1, 0)
    (failure,) = summary["failures"]
    assert failure["name"] == "bad" and failure["reason"] == "bad_video"
    assert failure["message"].startswith(f"unreadable video {s3_bucket}/in/notes.mp4") and "\n" not in failure["message"]

    before = _snapshot(s3_server, bucket, "out/")
    assert main(argv) == 1  # the bad pair is retried and fails again; the done pairs are skipped
    assert "0 done, 1 failed, 2 skipped" in capsys.readouterr().out
    after = _snapshot(s3_server, bucket, "out/")
    summary_key = "out/summary.json"
    assert {k: v for k, v in after.items() if k != summary_key} == {k: v for k, v in before.items() if k != summary_key}
    assert len(before) == 2 * 3 + 1  # dubbed.mp4, sigma.mp4, report.json per done pair, and the summary
    assert json.loads(storage.read_text(f"{out}/summary.json"))["skipped"] == 2


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (['{"video": "a.mp4"}'], ":1: 'audio' must be a non-empty path or URI"),
        (['{"video": "a.mp4", "audio": "b.wav"}', "not json"], ":2: not valid JSON"),
        (['{"video": "a.mp4", "audio": "b.wav", "speed": 2}'], ":1: unknown key 'speed'"),
        (['{"video": "x/a.mp4", "audio": "b.wav"}', '{"video": "y/a.mp4", "audio": "b.wav"}'], ":2: name 'a-b' is already used on line 1"),
        (['{"video": "a.mp4", "audio": "b.wav", "name": "../up"}'], ":1: name '../up' must be"),
        (["", "  "], "no pairs"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path: Path, lines: list[str], words: str) -> None:
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=re.escape(words)) as info:
        read_pairs(str(manifest))
    assert "\n" not in str(info.value)


def test_manifest_paths_resolve_from_its_folder(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs" / "pairs.jsonl"
    manifest.parent.mkdir()
    manifest.write_text('{"video": "clips/a.mp4", "audio": "/abs/b.wav"}\n{"video": "s3://b/c.mp4", "audio": "d.wav", "name": "x"}\n')
    first, second = read_pairs(str(manifest))
    assert (first.name, first.video, first.audio) == ("a-b", f"{manifest.parent}/clips/a.mp4", "/abs/b.wav")
    assert (second.name, second.video, second.audio) == ("x", "s3://b/c.mp4", f"{manifest.parent}/d.wav")
    with pytest.raises(ManifestError, match="manifest not found"):
        read_pairs(str(tmp_path / "missing.jsonl"))


def test_job_rejects_bad_arguments_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text(json.dumps({"video": str(VIDEO), "audio": str(SPEECH)}) + "\n")
    out = tmp_path / "out"
    assert main(["--manifest", str(tmp_path / "missing.jsonl"), "--out", str(out), "--model", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"julnet generate: error: manifest not found: {tmp_path / 'missing.jsonl'}"
    assert main(["--manifest", str(manifest), "--out", str(out), "--model", str(tmp_path / "no-model")]) == 2
    assert capsys.readouterr().err.strip() == f"julnet generate: error: model not found: {tmp_path / 'no-model'}"
    assert main(["--manifest", str(manifest), "--out", str(out), "--model", str(tmp_path), "--device", "cuda"]) == 2
    assert "--device cuda needs --gpus-per-worker" in capsys.readouterr().err
    assert main(["--manifest", str(manifest), "--video", str(VIDEO), "--out", str(out), "--model", str(tmp_path)]) == 2
    assert "drop --video, --audio and --report" in capsys.readouterr().err
    assert not out.exists()
