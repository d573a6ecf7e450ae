"""Secrets stay secret: one redaction rule for what leaves the process, and state files that cannot run code.

The end-to-end canary search over every documented command is the last test of tests/test_docs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from julnet import storage
from julnet.artifacts import read_state
from julnet.config import load_config
from julnet.redact import redact, redact_tree
from julnet.tracking import client
from julnet.models.build import build_models, build_optimizers
from julnet.models.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint, training_state
from tests.conftest import REPO

CANARY = "canary-7f3a9c21e5"
PRESIGNED = f"https://bucket.example.com/syncnet.pt?X-Amz-Credential=AKIA{CANARY}&X-Amz-Signature={CANARY}"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"http://alice:{CANARY}@mlflow:5000/x", "http://***@mlflow:5000/x"),
        (f"postgresql://julnet:{CANARY}@db/mlflow", "postgresql://***@db/mlflow"),
        (f"https://{CANARY}@host/", "https://***@host/"),
        (PRESIGNED, "https://bucket.example.com/syncnet.pt?X-Amz-Credential=***&X-Amz-Signature=***"),
        (f"error at http://a:{CANARY}@h/api: refused", "error at http://***@h/api: refused"),
        ("s3://bucket/key@2x.png models:/julnet@champion runs:/abc/model", "s3://bucket/key@2x.png models:/julnet@champion runs:/abc/model"),
        ("sqlite:////tmp/runs/mlflow.db http://127.0.0.1:8265", "sqlite:////tmp/runs/mlflow.db http://127.0.0.1:8265"),
    ],
)
def test_redact_hides_userinfo_and_query_values_and_leaves_other_uris(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown  # idempotent


def test_redact_masks_secret_environment_values_and_secret_named_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", CANARY)
    monkeypatch.setenv("SOME_API_TOKEN", "short")  # under MIN_SECRET_CHARS: too common a string to search for
    assert redact(f"logged in with {CANARY}, token short") == "logged in with ***, token short"
    tree = redact_tree({"db": {"password": "hunter22", "uri": f"http://u:{CANARY}@h"}, "rows": [CANARY, 3], "token": None})
    assert tree == {"db": {"password": "***", "uri": "http://***@h"}, "rows": ["***", 3], "token": None}


class _ChangingEnviron(dict):
    """An os.environ that another thread edits while it is read: listing its names fails once (size changed), and one
    listed name is gone by the time its value is read (os.environ.items() raised KeyError on it in a Tune trial)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.listings = 0

    def __iter__(self):
        self.listings += 1
        if self.listings == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return iter([*super().keys(), "_MLFLOW_TELEMETRY_SESSION_ID"])

    def items(self):
        return [(name, self[name]) for name in self]


def test_redaction_reads_an_environment_another_thread_is_changing(monkeypatch: pytest.MonkeyPatch) -> None:
    changing = _ChangingEnviron({"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-example-secret", "HOME": "/root"})
    monkeypatch.setattr(os, "environ", changing)
    assert redact("key wJalrXUtnFEMI-example-secret here") == "key *** here"
    assert changing.listings == 2


def test_config_keeps_the_real_value_and_shows_only_the_redacted_one() -> None:
    uri = f"http://alice:{CANARY}@mlflow.example.com/"
    cfg = load_config("tiny", [f"tracking.uri={uri}", f"syncnet.weights.path={PRESIGNED}"])
    assert cfg.tracking.uri == uri and cfg.syncnet.weights.path == PRESIGNED  # the running process keeps it
    for shown in (cfg.to_yaml(), str(cfg.flat()), str(cfg.public_dict())):
        assert CANARY not in shown
    assert cfg.flat()["tracking.uri"] == "http://***@mlflow.example.com/"


def test_checkpoints_and_written_files_hold_no_credential(tmp_path: Path) -> None:
    """The measured leak: `--set tracking.uri=http://alice:PASSWORD@host/` ended up in state.pt and config.yaml."""
    cfg = load_config("tiny", [f"tracking.uri=http://alice:{CANARY}@mlflow.example.com/"])
    models = build_models(cfg, pretrained=False)
    optimizers = build_optimizers(cfg, models)
    state = training_state(cfg, models, optimizers, torch.amp.GradScaler("cpu", enabled=False), 1, "frame")
    saved = save_checkpoint(tmp_path / "checkpoints", state, keep_last=1)
    for file in saved.iterdir():
        assert CANARY.encode() not in file.read_bytes(), file.name
    assert load_checkpoint(saved)["config"]["tracking"]["uri"] == "http://***@mlflow.example.com/"
    storage.write_text(str(tmp_path / "report.json"), f'{{"source": "{PRESIGNED}"}}')
    assert CANARY not in (tmp_path / "report.json").read_text()


def test_mlflow_client_sends_redacted_values_and_prints_no_credential(
    mlflow_server, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Params, tags and text go through the rule; the URI's user:password move to MLflow's environment variables,
    so the server is still reached with them and MLflow's own "View run at" line carries none."""
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    mlflow = client(mlflow_server.uri.replace("http://", f"http://alice:{CANARY}@"))
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", CANARY)
    assert mlflow.tracking_uri == mlflow_server.uri
    experiment = mlflow.create_experiment(f"secrets-{os.getpid()}")
    run = mlflow.create_run(experiment, tags={"julnet.data": PRESIGNED})
    mlflow.log_param(run.info.run_id, "syncnet.weights.path", PRESIGNED)
    mlflow.set_tag(run.info.run_id, "api_token", CANARY)
    mlflow.log_text(run.info.run_id, f"uri http://a:{CANARY}@h/", "notes.txt")
    mlflow.set_terminated(run.info.run_id)
    stored = MlflowClient(mlflow_server.uri).get_run(run.info.run_id).data
    assert CANARY not in str(stored.params) + str(stored.tags)
    assert stored.tags["api_token"] == "***"
    assert CANARY not in MlflowClient(mlflow_server.uri).download_artifacts(run.info.run_id, "notes.txt", str(Path(mlflow_server.log_path).parent))
    assert CANARY not in "".join(capfd.readouterr())


def test_log_lines_prints_and_tracebacks_are_redacted() -> None:
    script = (
        "import logging, os\n"
        "from julnet.progress import setup_logging\n"
        "setup_logging()\n"
        "logging.getLogger('julnet.x').info('tracking at http://alice:%s@host/', os.environ['MLFLOW_TRACKING_PASSWORD'])\n"
        "print('AWS', os.environ['AWS_SECRET_ACCESS_KEY'])\n"
        "raise RuntimeError('failed with ' + os.environ['AWS_SECRET_ACCESS_KEY'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_PASSWORD": CANARY, "AWS_SECRET_ACCESS_KEY": CANARY + "-aws"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "tracking at http://***@host/" in out.stderr and "AWS ***" in out.stdout and "RuntimeError: failed with ***" in out.stderr
    assert CANARY not in out.stdout + out.stderr


class Payload:
    """A pickle that runs a command when unpickled: what a malicious checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_a_payload_is_refused_in_one_line_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    checkpoint = tmp_path / "evil" / "step-00000001"
    checkpoint.mkdir(parents=True)
    torch.save({"format_version": 1, "config": {}, "models": Payload(marker)}, checkpoint / STATE_FILE)
    with pytest.raises(ValueError, match=r"refused to load: it holds pickled objects, not plain weights \(GLOBAL posix.system"):
        read_state(checkpoint / STATE_FILE)
    out = subprocess.run(
        [sys.executable, "-m", "julnet", "generate", "--model", str(tmp_path / "evil"), "--video", str(REPO / "examples/grid/bbaf2n.mpg"),
         "--audio", str(REPO / "examples/grid/brbk7n.mpg"), "--out", str(tmp_path / "out.mp4")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    error = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and "refused to load" in error[0] and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not marker.exists() and not (tmp_path / "out.mp4").exists()
