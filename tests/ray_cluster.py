"""Pytest plugin: one local Ray head node per test session (`ray start --head`), bound to 127.0.0.1.

Tests submit jobs to its dashboard (`ray_cluster.dashboard`) or attach in-process (`ray_local`). It starts
after the S3 test server, so Ray's workers inherit the AWS endpoint and credentials. At teardown only
this cluster's processes are stopped; a cluster someone else runs on the machine is never touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Ray reads this once, when first imported: set before any test module imports ray, so every attach stays on
# 127.0.0.1 (otherwise Ray swaps loopback for the machine's address and the local cluster is never found).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Token auth, likewise set before anything imports ray (Ray caches its auth mode): the session's cluster, this
# process and every `ray job submit` share this token.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class RayCluster:
    address: str  # GCS address, for ray.init
    dashboard: str  # http address, for ray job submit
    temp_dir: Path

    def env(self) -> dict[str, str]:
        """Environment for `ray job submit` against this cluster."""
        return {**os.environ, "RAY_ADDRESS": self.dashboard}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Set for `ray start` only, so every process of this cluster inherits it: Ray's agents rename themselves
# (ray::DashboardAgent) and its client server never names the temp folder, so the command line alone misses them and
# they outlived the session, the dashboard agent spinning at a quarter of a core.
CLUSTER_MARKER = "JULNET_TEST_RAY_CLUSTER"


def _cluster_pids(temp_dir: Path) -> list[int]:
    """This cluster's processes: the temp folder in the command line or the marker in the environment."""
    pids = []
    marker = f"{CLUSTER_MARKER}={temp_dir}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if str(temp_dir).encode() in (proc / "cmdline").read_bytes() or marker in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _stop(temp_dir: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _cluster_pids(temp_dir)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _cluster_pids(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_cluster(s3_server) -> Iterator[RayCluster]:
    # Ray's socket paths must stay under 107 bytes: a short folder of its own, not pytest's deep temporary path
    # (which grows a popen-gwN level when the tests run on several workers).
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-"))
    port, dashboard_port = _free_port(), _free_port()
    env = pytest.MonkeyPatch()
    env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only (set above too, for early imports)
    # A job's entrypoint `python ...` finds this environment's interpreter, as on a cluster whose image has julnet.
    env.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [
        RAY, "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--include-dashboard", "true",
        "--disable-usage-stats", "--temp-dir", str(temp_dir),
    ]
    # Every fixed default port made free too, so sessions side by side on one machine never collide.
    for flag in ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--metrics-export-port", "--runtime-env-agent-port"):
        cmd += [flag, str(_free_port())]
    log = temp_dir / "ray-start.log"
    try:
        with log.open("w") as sink:  # not a pipe: the daemons it starts would hold a pipe open forever
            returncode = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, timeout=180,
                                        env={**os.environ, CLUSTER_MARKER: str(temp_dir)}).returncode
        if returncode != 0:
            raise RuntimeError(f"ray start failed:\n{log.read_text()[-3000:]}")
        yield RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", temp_dir)
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        env.undo()


@pytest.fixture(scope="session")
def ray_local(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    """This process attached to the session's cluster (for in-process Ray Data and job entrypoints)."""
    import ray

    if ray.is_initialized():
        raise RuntimeError("a Ray cluster is already attached; tests attach to their own")
    ray.init(address=ray_cluster.address, log_to_driver=False, configure_logging=False)
    try:
        yield ray_cluster
    finally:
        ray.shutdown()
