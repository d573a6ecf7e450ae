"""Issue 32: a command never destroys what it was given and never loses what it wrote. No output may be an input or
another output (however the path is spelled: `..`, a symlink, a hard link), nothing existing is replaced without
--overwrite, an output that cannot be written and a missing input fail before the model loads; each in one line,
exit 2, the inputs' bytes unchanged and nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from julnet import paths, storage
from julnet.cli import main
from julnet.data.video import iter_frames, read_audio, read_frames
from tests.conftest import GRID_CLIPS, run_cli
from tests.test_generate import _write_video, _write_wav

VIDEO, SPEECH = GRID_CLIPS


def _state(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: files by their sha256, folders as "dir", links by their target."""
    found = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        found[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `julnet ARGV` in this process; it must exit 2 with one error line, which is returned."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder holding a copy of a GRID clip (video.mpg), a stand-in model file and links to the clip."""
    shutil.copy(VIDEO, tmp_path / "video.mpg")
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "soft.mp4").symlink_to(tmp_path / "video.mpg")
    os.link(tmp_path / "video.mpg", tmp_path / "hard.mp4")
    return tmp_path


def test_generate_refuses_an_output_that_is_an_input_however_spelled(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video, model = work / "video.mpg", work / "model.pt"
    before = _state(work)
    speech = hashlib.sha256(SPEECH.read_bytes()).hexdigest()
    base = ["generate", "--video", str(video), "--audio", str(SPEECH), "--model", str(model), "--overwrite"]  # even with --overwrite
    cases = [
        (["--out", str(video)], f"the output video {video} is the same file as the video {video}"),
        (["--out", f"{work}/sub/../video.mpg"], f"the output video {work}/sub/../video.mpg is the same file as the video {video}"),
        (["--out", str(work / "soft.mp4")], f"the output video {work / 'soft.mp4'} is the same file as the video {video}"),
        (["--out", str(work / "hard.mp4")], f"the output video {work / 'hard.mp4'} is the same file as the video {video}"),
        (["--out", str(work / "o.mp4"), "--report", str(SPEECH)], f"the report {SPEECH} is the same file as the audio {SPEECH}"),
        (["--out", str(work / "o.mp4"), "--uncertainty-video", str(model)], f"the uncertainty video {model} is the same file as the model {model}"),
    ]
    for extra, words in cases:
        assert _refused(capsys, [*base, *extra]) == f"julnet generate: error: {words}: writing it would destroy that input"
        assert _state(work) == before, extra
    assert hashlib.sha256(SPEECH.read_bytes()).hexdigest() == speech

    proc = run_cli(*base[:-1], "--out", f"{work}/./video.mpg", check=False)  # the real command line, without --overwrite
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"julnet generate: error: the output video {work}/video.mpg is the same file as the video {video}: writing it would destroy that input")
    assert _state(work) == before


def test_generate_refuses_two_outputs_in_one_file(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["generate", "--video", str(work / "video.mpg"), "--audio", str(SPEECH), "--model", str(work / "model.pt")]
    out, report = work / "o.mp4", work / "r.json"
    cases = [
        (["--out", str(out), "--report", f"{work}/x/../o.mp4"], f"the report {work}/x/../o.mp4 is the same file as the output video {out}"),
        (["--out", str(out), "--uncertainty-video", str(report), "--report", str(report)], f"the report {report} is the same file as the uncertainty video {report}"),
        (["--out", str(out), "--epistemic-samples", "2", "--uncertainty-video", str(report), "--epistemic-video", str(report)],
         f"the epistemic video {report} is the same file as the uncertainty video {report}"),
        (["--out", str(out), "--uncertainty-video", "--uncertainty-video", f"{work}/o.sigma.mp4", "--epistemic-samples", "2",
          "--epistemic-video", f"{work}/o.sigma.mp4"], f"the epistemic video {work}/o.sigma.mp4 is the same file as the uncertainty video {work}/o.sigma.mp4"),
    ]
    before = _state(work)
    for extra, words in cases:
        assert _refused(capsys, [*base, *extra]) == f"julnet generate: error: {words}: each output needs a path of its own"
        assert _state(work) == before, extra


def test_an_existing_output_is_kept_unless_overwrite_asks(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video, speech = tmp_path / "short.mp4", tmp_path / "speech.wav"  # 3 frames, 0.4 s of speech: 10 output frames
    _write_video(video, np.stack([f.copy() for _, f in zip(range(3), iter_frames(VIDEO))]))
    _write_wav(speech, read_audio(SPEECH)[16000 : 16000 + 6400], 16000)
    out, report = tmp_path / "out" / "dubbed.mp4", tmp_path / "out" / "frames.json"
    out.parent.mkdir()
    out.write_bytes(b"an earlier result")
    base = ["generate", "--video", str(video), "--audio", str(speech), "--model", str(model_dir), "--out", str(out), "--report", str(report)]
    before = _state(tmp_path)
    assert _refused(capsys, base) == f"julnet generate: error: the output video {out} already exists; --overwrite replaces it"
    report.write_text("{}")
    assert _refused(capsys, [*base[:-2]]) == f"julnet generate: error: the output video {out} already exists; --overwrite replaces it"
    out.unlink()
    assert _refused(capsys, base) == f"julnet generate: error: the report {report} already exists; --overwrite replaces it"
    assert report.read_text() == "{}"
    out.write_bytes(b"an earlier result")
    assert _state(tmp_path) == {**before, "out/frames.json": hashlib.sha256(b"{}").hexdigest()}

    assert main([*base, "--overwrite"]) == 0
    assert len(read_frames(out)) == 10 and json.loads(report.read_text())["summary"]["frames"] == 10
    assert sorted(p.name for p in out.parent.iterdir()) == ["dubbed.mp4", "frames.json"]  # no temporary file left


def test_an_unwritable_output_or_a_missing_input_fails_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # /sys takes no new file, even for root (chmod would not stop root); the folder test must find that out
    try:
        fd, probe = tempfile.mkstemp(dir="/sys/kernel")
    except OSError as exc:
        why = exc.strerror  # Permission denied, or Read-only file system where /sys is mounted so
    else:
        os.close(fd)
        os.unlink(probe)
        pytest.skip("/sys/kernel takes new files here")
    video = tmp_path / "video.mpg"
    shutil.copy(VIDEO, video)
    missing = tmp_path / "no-model"  # not found either: every check below comes before the model loads
    base = ["generate", "--video", str(video), "--audio", str(SPEECH), "--model", str(missing)]
    before = _state(tmp_path)
    proc = run_cli(*base, "--out", str(tmp_path / "new" / "deep" / "o.mp4"), "--report", "/sys/kernel/julnet-report.json", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"julnet generate: error: cannot write the report /sys/kernel/julnet-report.json: its folder takes no new file ({why})")
    assert _state(tmp_path) == before  # new/deep/ was made for the video, and removed again

    assert _refused(capsys, [*base[:2], str(tmp_path / "gone.mp4"), *base[3:], "--out", str(tmp_path / "o.mp4")]) == (
        f"julnet generate: error: video not found: {tmp_path / 'gone.mp4'}")
    assert _refused(capsys, [*base[:4], str(tmp_path / "gone.wav"), *base[5:], "--out", str(tmp_path / "o.mp4")]) == (
        f"julnet generate: error: audio not found: {tmp_path / 'gone.wav'}")
    assert _refused(capsys, [*base, "--out", str(tmp_path / "o.mp4"), "--uncertainty-video", "/sys/kernel/julnet-sigma.mp4"]) == (
        f"julnet generate: error: cannot write the uncertainty video /sys/kernel/julnet-sigma.mp4: its folder takes no new file ({why})")
    assert _state(tmp_path) == before


def test_evaluate_refuses_to_write_over_its_data_or_an_earlier_result(tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, model = tmp_path / "data" / "manifest.json", tmp_path / "r.sparsification.png"
    manifest.parent.mkdir()
    manifest.write_text('{"videos": []}')
    model.write_bytes(b"weights")
    (tmp_path / "old.json").write_text("{}")
    base = ["evaluate", "--model", str(model), "--data", str(manifest)]
    before = _state(tmp_path)
    proc = run_cli(*base, "--out", f"{tmp_path}/data/../data/manifest.json", "--overwrite", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"julnet evaluate: error: the result {tmp_path}/data/../data/manifest.json is the same file as the data manifest {manifest}: "
        "writing it would destroy that input")
    assert _refused(capsys, [*base, "--out", str(tmp_path / "r.json"), "--overwrite"]) == (  # the plot beside the result
        f"julnet evaluate: error: the sparsification plot {model} is the same file as the model {model}: writing it would destroy that input")
    assert _refused(capsys, [*base, "--out", str(tmp_path / "old.json")]) == (
        f"julnet evaluate: error: the result {tmp_path / 'old.json'} already exists; --overwrite replaces it")
    assert _state(tmp_path) == before

    storage.write_text(f"{s3_bucket}/grid/manifest.json", "{}")
    storage.write_text(f"{s3_bucket}/evals/old.json", "{}")
    s3 = ["evaluate", "--model", str(model), "--data", f"{s3_bucket}/grid/manifest.json"]
    assert _refused(capsys, [*s3, "--out", f"{s3_bucket.upper()[:5]}{s3_bucket[5:]}//grid/manifest.json", "--overwrite"]).endswith(
        f"is the same file as the data manifest {s3_bucket}/grid/manifest.json: writing it would destroy that input")
    assert _refused(capsys, [*s3, "--out", f"{s3_bucket}/evals/old.json"]) == (
        f"julnet evaluate: error: the result {s3_bucket}/evals/old.json already exists; --overwrite replaces it")
    assert sorted(storage.list_files(s3_bucket)) == [f"{s3_bucket}/evals/old.json", f"{s3_bucket}/grid/manifest.json"]


def test_preprocess_keeps_its_dataset_apart_from_its_input_and_from_other_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, other = tmp_path / "raw", tmp_path / "other"
    raw.mkdir()
    other.mkdir()
    (raw / "notes.txt").write_text("not a video\n")  # preprocessing it is quick: rejected as not_a_video
    shutil.copy(VIDEO, raw / VIDEO.name)
    before = _state(tmp_path)
    base = ["preprocess", "--config", "tiny", "--overwrite"]
    for output, words in (
        (raw, f"the output {raw} is the input {raw} or lies inside it"),
        (raw / "dataset", f"the output {raw / 'dataset'} is the input {raw} or lies inside it"),
        (tmp_path, f"the output {tmp_path} holds the input {raw}"),
    ):
        assert _refused(capsys, [*base, "--input", str(raw), "--output", str(output)]) == (
            f"julnet preprocess: error: {words}: give the dataset a folder outside the videos")
        assert _state(tmp_path) == before

    dataset = tmp_path / "dataset"  # a dataset made from raw/: a manifest, a report naming raw/, a shard
    (dataset / "shards").mkdir(parents=True)
    (dataset / "manifest.json").write_text('{"videos": []}')
    (dataset / "report.json").write_text(json.dumps({"accepted": 1, "rejected": [], "input": paths.location(raw)}))
    (dataset / "shards" / "part-0.parquet").write_bytes(b"frames")
    (other / "notes.txt").write_text("not a video either\n")
    kept = _state(tmp_path)
    proc = run_cli("preprocess", "--config", "tiny", "--input", str(other), "--output", str(dataset), check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"julnet preprocess: error: the output {dataset} holds a dataset made from {raw}, not {other}: --overwrite replaces it")
    assert _state(tmp_path) == kept

    assert main([*base, "--input", str(other), "--output", str(dataset)]) == 1  # replaced: nothing usable in other/
    assert "no usable video" in capsys.readouterr().err
    assert sorted(p.name for p in dataset.iterdir()) == ["manifest.json", "report.json", "shards"]
    assert [p.suffix for p in (dataset / "shards").iterdir()] == [".json"]  # the new shard's result; the old shard went with its dataset
    report = json.loads((dataset / "report.json").read_text())
    assert report["input"] == str(other) and report["rejected"][0]["reason"] == "not_a_video"
    assert main(["preprocess", "--config", "tiny", "--input", f"{other}/", "--output", str(dataset)]) == 1  # the same input: resumed
    capsys.readouterr()


def test_batch_refuses_a_pair_that_reads_an_output_of_the_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    (out / "first").mkdir(parents=True)
    shutil.copy(VIDEO, out / "first" / "dubbed.mp4")  # first's video is first's own earlier output
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text(json.dumps({"video": "out/first/dubbed.mp4", "audio": str(SPEECH), "name": "first"}) + "\n")
    before = _state(tmp_path)
    base = ["generate", "--manifest", str(manifest), "--out", str(out), "--model", str(tmp_path / "no-model")]
    assert _refused(capsys, base) == (
        f"julnet generate: error: the dubbed.mp4 of pair first {out}/first/dubbed.mp4 is the same file as the video of pair first "
        f"{tmp_path}/out/first/dubbed.mp4: writing it would destroy that input")
    assert _refused(capsys, [*base, "--overwrite"]).startswith("julnet generate: error: --manifest resumes: a re-run skips the pairs already done")
    assert _state(tmp_path) == before
