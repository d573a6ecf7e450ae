"""The code version recorded with datasets, runs and models."""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@functools.cache
def code_version() -> str:
    """`<package version>+g<commit>[.dirty]` inside a git checkout, else the package version."""
    try:
        base = version("julnet")
    except PackageNotFoundError:
        base = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return base
    if commit.returncode != 0:
        return base
    return f"{base}+g{commit.stdout.strip()}{'.dirty' if dirty.stdout.strip() else ''}"
