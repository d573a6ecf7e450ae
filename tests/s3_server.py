"""Pytest plugin: a real S3-compatible server (moto_server) for the test session, and a fresh bucket per test.

Register it with `pytest_plugins = ["tests.s3_server"]`. The session fixture starts its own `moto_server`
process on a free loopback port, points the AWS environment variables at it for the session (restored
afterwards) and stops the process at teardown; nothing depends on a server started by hand.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

REGION = "us-east-1"
ACCESS_KEY = "testing"
# Canaries: made-up credentials that no output of julnet may ever contain (tests/test_docs.py searches for them).
SECRET_KEY = f"canary-aws-secret-{secrets.token_hex(8)}"
SESSION_TOKEN = f"canary-aws-session-{secrets.token_hex(8)}"
STARTUP_TIMEOUT_S = 30.0


class S3Server:
    """A running moto server: its endpoint URL, an S3 client for it, and fresh buckets on demand."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            aws_session_token=SESSION_TOKEN,
            config=Config(connect_timeout=1, read_timeout=10, retries={"max_attempts": 1}),
        )

    def make_bucket(self, prefix: str = "julnet-test") -> str:
        """Create a bucket with a unique name and return its `s3://` URI."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def answers(self) -> bool:
        """Whether the server answers an S3 request yet."""
        try:
            self.client.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True


def _moto_server_command() -> str:
    """The moto_server executable of this interpreter's environment, else the one on PATH."""
    command = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if command is None:
        pytest.fail("moto_server not found: install the dev extras (moto[server])")
    return command


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(server: S3Server, process: subprocess.Popen, log: Path) -> None:
    """Block until the server answers; fail with its log if it exits or stays silent too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.answers():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"moto_server did not start (exit code {process.poll()}):\n{log.read_text()}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server and wait for it, killing it if it does not stop."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server for the session, with the AWS environment variables pointing at it."""
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    port = _free_port()
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        server = S3Server(f"http://127.0.0.1:{port}")
        _wait_until_ready(server, process, log)
        with pytest.MonkeyPatch.context() as env:
            for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
                env.setenv(name, server.endpoint)
            for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
                env.setenv(name, REGION)
            env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            env.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
            for name in ("AWS_SECURITY_TOKEN", "AWS_PROFILE"):
                env.delenv(name, raising=False)
            # Keep ~/.aws files and the EC2 metadata service out of the tests.
            env.setenv("AWS_CONFIG_FILE", str(log.parent / "no-aws-config"))
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(log.parent / "no-aws-credentials"))
            env.setenv("AWS_EC2_METADATA_DISABLED", "true")
            yield server
    finally:
        _stop(process)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's moto server, as `s3://<bucket>`."""
    return s3_server.make_bucket()
