"""Pytest plugin: a real `mlflow server` for the test session, with a sqlite backend and proxied artifacts.

Register it with `pytest_plugins = ["tests.mlflow_server"]`. The session fixture starts its own server on a free
loopback port (job execution off and one worker: ~7 s and ~500 MB instead of eight processes) and stops its whole
process group at teardown; nothing depends on a server started by hand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server: its URI for `MlflowClient` and the file its output goes to."""

    uri: str
    log_path: Path


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(uri: str) -> bool:
    """Whether the server answers GET /health with 200."""
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log: Path, chars: int = 4000) -> str:
    """The end of the server's output, for failure messages."""
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group (the CLI and its uvicorn worker) and wait, killing it if it hangs."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def running_mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """Start `mlflow server` with its database and artifacts under `root`; stop its process group on exit."""
    mlflow = Path(sys.executable).parent / "mlflow"
    if not mlflow.exists():
        pytest.fail(f"{mlflow} not found: install mlflow in this environment")
    port = _free_port()
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", log_path=root / "server.log")
    command = [
        str(mlflow), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(server.log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=root,
            start_new_session=True,  # its own process group, so teardown stops the uvicorn worker too
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(server.uri):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not become healthy (exit code {process.poll()}):\n{_log_tail(server.log_path)}"
                )
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An MLflow tracking server for the session: sqlite backend, artifacts served from a local folder."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as server:
        yield server
