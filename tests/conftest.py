"""Shared fixtures: the tiny config and helpers for running the CLI in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from julnet.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.s3_server"]


@pytest.fixture
def tiny() -> Config:
    return load_config("tiny")


def run_cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m julnet ARGS` in a fresh interpreter and return the finished process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "julnet", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"julnet {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc
