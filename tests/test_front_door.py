"""Every `julnet` sub-command, given an unknown id (run, version, alias, model, preset) or a URI that leads nowhere
(a missing bucket, a missing file), says so in one line on stderr and exits 2: no traceback, no output written.

The commands run in this process through `julnet.cli.main` (what the `julnet` script calls), against the session's
MLflow and S3 servers; each fails before any work, so none starts Ray or trains.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from julnet import cli

UNKNOWN_RUN = uuid.uuid4().hex


@pytest.fixture
def failing(mlflow_server, s3_server, monkeypatch, capsys, tmp_path):
    """`failing(*argv)`: run `julnet ARGV`, assert exit 2 and one error line naming the command; that line."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.chdir(tmp_path)  # nothing a failure might write lands anywhere but here, which must stay empty

    def run(*argv: str) -> str:
        capsys.readouterr()
        code = cli.main(list(argv))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(f"julnet {argv[0]}: error: ")]
        assert code == 2 and len(errors) == 1, f"julnet {' '.join(argv)} exited {code}:\n{err[-3000:]}"
        assert "Traceback" not in err, err[-3000:]
        assert not any(tmp_path.iterdir()), f"julnet {' '.join(argv)} wrote {sorted(p.name for p in tmp_path.iterdir())}"
        return errors[0]

    return run


@pytest.fixture
def missing_bucket(s3_server) -> str:
    """An s3:// prefix whose bucket does not exist on the session's S3 server."""
    return f"s3://julnet-missing-{uuid.uuid4().hex[:8]}"


def test_info(failing, tmp_path: Path) -> None:
    assert "no-such-preset" in failing("info", "--config", "no-such-preset")
    assert "nowhere.yaml" in failing("info", "--config", str(tmp_path / "nowhere.yaml"))


def test_train(failing, missing_bucket: str, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    assert UNKNOWN_RUN in failing("train", "--config", "tiny", "--synthetic", "--steps", "1", "--out", out, "--init", f"runs:/{UNKNOWN_RUN}/model")
    assert missing_bucket.removeprefix("s3://") in failing("train", "--config", "tiny", "--data", f"{missing_bucket}/manifest.json", "--out", out)
    assert missing_bucket.removeprefix("s3://") in failing("train", "--config", "tiny", "--data", f"{missing_bucket}/manifest.json",
                                                           "--storage", f"{missing_bucket}/runs", "--name", "x")


def test_train_syncnet(failing, missing_bucket: str, tmp_path: Path) -> None:
    assert "no-such-preset" in failing("train-syncnet", "--config", "no-such-preset", "--synthetic", "--steps", "1", "--out", str(tmp_path / "s"))
    assert missing_bucket.removeprefix("s3://") in failing("train-syncnet", "--config", "tiny", "--data", f"{missing_bucket}/manifest.json",
                                                           "--steps", "1", "--out", str(tmp_path / "s"))


def test_tune(failing, missing_bucket: str, tmp_path: Path) -> None:
    assert "no-such-preset" in failing("tune", "--config", "no-such-preset", "--data", "x.json", "--storage", str(tmp_path / "t"), "--name", "t")
    assert missing_bucket.removeprefix("s3://") in failing("tune", "--config", "tiny", "--data", f"{missing_bucket}/manifest.json",
                                                           "--storage", str(tmp_path / "t"), "--name", "t")


def test_preprocess(failing, missing_bucket: str, tmp_path: Path) -> None:
    assert "nothing.jsonl" in failing("preprocess", "--config", "tiny", "--input", str(tmp_path / "nothing.jsonl"), "--output", str(tmp_path / "d"))
    assert missing_bucket.removeprefix("s3://") in failing("preprocess", "--config", "tiny", "--input", f"{missing_bucket}/raw",
                                                           "--output", str(tmp_path / "d"))


def test_generate(failing, missing_bucket: str, tmp_path: Path) -> None:
    clip = str(Path(__file__).parent / "data" / "bbaf2n.mpg")
    out = str(tmp_path / "out.mp4")
    assert UNKNOWN_RUN in failing("generate", "--video", clip, "--audio", clip, "--model", f"runs:/{UNKNOWN_RUN}/model", "--out", out)
    assert "no-such-model" in failing("generate", "--video", clip, "--audio", clip, "--model", "models:/no-such-model@champion", "--out", out)
    assert f"{missing_bucket}/v.mpg: one pair reads and writes local files" in failing(
        "generate", "--video", f"{missing_bucket}/v.mpg", "--audio", clip, "--model", f"runs:/{UNKNOWN_RUN}/model", "--out", out)
    assert "video not found: /nowhere/v.mpg" in failing("generate", "--video", "file:///nowhere/v.mpg", "--audio", clip,
                                                        "--model", f"runs:/{UNKNOWN_RUN}/model", "--out", out)


def test_register(failing, monkeypatch) -> None:
    assert UNKNOWN_RUN in failing("register", "--run", UNKNOWN_RUN)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow retries a silent server for minutes by default
    assert "127.0.0.1:9" in failing("register", "--run", UNKNOWN_RUN, "--set", "tracking.uri=http://127.0.0.1:9")


def test_promote(failing, missing_bucket: str) -> None:
    assert UNKNOWN_RUN in failing("promote", "--run", UNKNOWN_RUN)
    assert "no-such-model" in failing("promote", "--version", "7", "--set", "promotion.model_name=no-such-model")
    assert "no-such-model" in failing("promote", "--set", "promotion.model_name=no-such-model")  # no @challenger to promote
    assert missing_bucket.removeprefix("s3://") in failing("promote", "--version", "7", "--data", f"{missing_bucket}/manifest.json")


def test_evaluate(failing, missing_bucket: str, model_dir: Path, grid_dataset: str) -> None:
    assert UNKNOWN_RUN in failing("evaluate", "--model", f"runs:/{UNKNOWN_RUN}/model", "--data", grid_dataset)
    assert "no-such-model" in failing("evaluate", "--model", "models:/no-such-model/3", "--data", grid_dataset)
    assert missing_bucket.removeprefix("s3://") in failing("evaluate", "--model", str(model_dir), "--data", f"{missing_bucket}/manifest.json")


def test_retrain(failing, missing_bucket: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("retrain")
    where = ("--dataset", str(elsewhere / "data"), "--storage", str(elsewhere / "runs"), "--name", "n")
    assert "no-such-preset" in failing("retrain", "--config", "no-such-preset", "--raw", str(elsewhere), *where)
    assert "must set promotion.* keys" in failing("retrain", "--raw", str(elsewhere), *where, "--promotion-set", "hist.bins=9")
    assert missing_bucket.removeprefix("s3://") in failing("retrain", "--raw", f"{missing_bucket}/raw", *where)
    raw = elsewhere / "raw"  # new data (no champion yet), so the chain starts: its first step fails, before any Ray
    raw.mkdir()
    (raw / "clip.mpg").write_bytes((Path(__file__).parent / "data" / "bbaf2n.mpg").read_bytes())
    (elsewhere / "not-a-folder").write_text("")
    line = failing("retrain", "--raw", str(raw), "--dataset", str(elsewhere / "not-a-folder"), *where[2:])
    assert line.startswith("julnet retrain: error: preprocess: julnet preprocess: error: ") and "not-a-folder" in line, line

