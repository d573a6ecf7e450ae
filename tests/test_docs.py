"""Every command in README.md and docs/*.md, run as a user would paste it.

Each ```bash block runs as one bash script (`set -euo pipefail`) in a scratch copy of the repository that all
documents share, document by document in the order of DOCUMENTS, so a guide's later commands use what its earlier
ones made (the data guide's dataset, the training guide's run). The environment is a user's shell pointed at
services this test session started on 127.0.0.1: a Ray head with token auth (RAY_ADDRESS), an MLflow server of
its own (MLFLOW_TRACKING_URI) and an S3 server (AWS_*) whose bucket `raw` holds the GRID sample clips under
`s3://raw/grid/`; the buckets the guides write to exist and are empty.

Every credential in that shell is a canary: the Ray token, the AWS secret key and session token, an MLflow
password in the environment and another in the tracking URI (`http://julnet:PASSWORD@...`, so every
`--set tracking.uri=$MLFLOW_TRACKING_URI` carries one too). After the last block, the final test searches
everything the commands wrote (the working copy and its runs, each block's stdout and stderr, the MLflow
server's database and artifacts, every S3 object, every Ray job's log) for them: none may appear.

An HTML comment on the line before a block, `<!-- test: {JSON} -->`, says how it runs here, in plain sight of
whoever edits the guide:
  "replace": {"old": "new"}  scale a cluster-sized command down (the paper preset to tiny, 20000 steps to a few)
                              or swap what cannot run here (`kubectl apply` without an API server); every `old`
                              must occur. `new` may hold {dashboard}, {mlflow} or {run_id} (the newest training run).
  "rc": N                    the exit code the block must end with (default 0)
  "timeout": S               seconds (default 600)
  "skip": "why"              only for `make test`, the command that runs this very test.
  "check": {"name": "file"}  after the block, tests/benchmark_reports.py's `name` checks the JSON report the block
                              wrote to `file` (relative to the working copy), with the block's output: each
                              benchmark script runs once, for its documentation and its assertions.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from tests import benchmark_reports
from tests import s3_server as s3_secrets
from tests.conftest import REPO
from tests.mlflow_server import running_mlflow_server

DOCUMENTS = [
    "README.md",
    "docs/data.md",
    "docs/training.md",
    "docs/sweeps.md",
    "docs/experiments.md",
    "docs/evaluation.md",
    "docs/registry.md",
    "docs/inference.md",
    "docs/operations.md",
    "docs/design.md",
    "docs/benchmarks.md",
    "docs/benchmarks-gpu.md",
]
BUCKETS = ("raw", "data", "runs", "sweeps", "evals", "models", "jobs", "dubbed")
FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*test:\s*(\{.*\})\s*-->\s*$")
KEYS = {"replace", "rc", "timeout", "skip", "check"}
URI_PASSWORD = f"canary-uri-password-{secrets.token_hex(8)}"
ENV_PASSWORD = f"canary-env-password-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Block:
    """One fenced shell block of a document, with the directive written above it."""

    document: str
    line: int
    code: str
    directive: dict

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def read_blocks(document: str) -> list[Block]:
    """The ```bash blocks of a document, in order, each with its `<!-- test: ... -->` directive (or {})."""
    lines = (REPO / document).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in ("bash", "sh", "shell"):
            above = DIRECTIVE.match(lines[i - 1]) if i > 0 else None
            directive = json.loads(above.group(1)) if above else {}
            if set(directive) - KEYS:
                raise ValueError(f"{document}:{i + 1}: unknown test directive keys {sorted(set(directive) - KEYS)}")
            blocks.append(Block(document, i + 1, "\n".join(lines[i + 1 : end]), directive))
        i = end + 1
    return blocks


BLOCKS = [block for document in DOCUMENTS if (REPO / document).exists() for block in read_blocks(document)]


def test_every_guide_is_listed_and_has_its_commands_run() -> None:
    """A new guide must join DOCUMENTS (so its commands run), and only `make test` may be skipped."""
    guides = {str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")}
    assert guides <= set(DOCUMENTS), f"add {sorted(guides - set(DOCUMENTS))} to DOCUMENTS in {__file__}"
    assert all(block.code.split("#")[0].strip() == "make test" for block in BLOCKS if "skip" in block.directive)
    assert len(BLOCKS) > 10
    # Every public function of benchmark_reports checks the report of exactly one block, and no block names another.
    checks = sorted(name for block in BLOCKS for name in block.directive.get("check", {}))
    defined = sorted(name for name, value in vars(benchmark_reports).items()
                     if callable(value) and value.__module__ == benchmark_reports.__name__ and not name.startswith("_"))
    assert checks == defined, f"checks named in the guides {checks}, defined {defined}"


@dataclass
class Shell:
    """A user's shell: the working copy the commands run in and the environment they see."""

    cwd: Path
    env: dict[str, str]
    values: dict[str, str]
    exported: dict[str, dict[str, str]] = field(default_factory=dict)  # each document's shell, as its blocks left it

    def value(self, name: str) -> str:
        if name == "run_id":
            return newest_training_run(self.env["MLFLOW_TRACKING_URI"])
        return self.values[name]


def newest_training_run(tracking_uri: str) -> str:
    """The id of the newest finished training run (what `julnet promote --run` takes)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiments, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]):
        if "julnet.storage" in run.data.tags and "julnet.sweep" not in run.data.tags:  # train_run's tag; not a sweep's parent
            return run.info.run_id
    raise AssertionError("no finished training run in the docs' MLflow server")


def _copy_checkout(destination: Path) -> None:
    """The repository's files as a clone has them (tracked and not ignored), without anything a run wrote."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


VENV = Path(sys.executable).parent.parent


def _keep_environment_installed(checkout: Path) -> None:
    """`make demo` in the copy must use this environment as installed, never reinstall julnet into it from the copy
    (which pytest deletes later): its install inputs are dated before the environment's stamp, so make sees it current."""
    stamp = VENV / ".installed"
    if not stamp.exists():
        pytest.fail(f"{VENV} has no .installed stamp: run `make install` (the guides' `make demo` would reinstall into it)")
    before = stamp.stat().st_mtime - 60
    for path in (checkout / "pyproject.toml", *(checkout / "constraints").glob("*.txt")):
        os.utime(path, (before, before))


@pytest.fixture(scope="session")
def docs_shell(ray_cluster, s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    root = tmp_path_factory.mktemp("docs")
    checkout = root / "julnet"
    _copy_checkout(checkout)
    _keep_environment_installed(checkout)
    for bucket in BUCKETS:
        s3_server.client.create_bucket(Bucket=bucket)
    for clip in sorted((REPO / "examples" / "grid").glob("*.mpg")):
        s3_server.client.upload_file(str(clip), "raw", f"grid/{clip.name}")
    (root / "mlflow").mkdir()
    with running_mlflow_server(root / "mlflow") as mlflow:
        tracking_uri = mlflow.uri.replace("http://", f"http://julnet:{URI_PASSWORD}@", 1)  # the server ignores it
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "RAY_ADDRESS": ray_cluster.dashboard,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_TRACKING_USERNAME": "julnet",
            "MLFLOW_TRACKING_PASSWORD": ENV_PASSWORD,
            "HOME": str(root),  # nothing of the user running the tests (e.g. ~/.ray) leaks in
            "VENV": str(VENV),  # `make demo` uses the installed environment
        }
        env.pop("PYTHONPATH", None)
        env.pop("RAY_AUTH_MODE", None)  # the guides must say to set it
        yield Shell(checkout, env, {"dashboard": ray_cluster.dashboard, "mlflow": tracking_uri})


def prepared(block: Block, shell: Shell) -> str:
    """The block's text with its directive's replacements made (each must occur) and placeholders filled."""
    code = block.code
    for old, new in block.directive.get("replace", {}).items():
        assert old in code, f"{block.id}: the test directive replaces {old!r}, which the block no longer contains"
        code = code.replace(old, re.sub(r"\{(\w+)\}", lambda m: shell.value(m.group(1)), new))
    return code


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the block's own limit is its directive's "timeout"; this one covers starting the services too
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_documented_commands_run_as_written(block: Block, docs_shell: Shell) -> None:
    """The block exits as expected; what it exports stays for the next block of its document, as in one shell."""
    if "skip" in block.directive:
        pytest.skip(block.directive["skip"])
    script = prepared(block, docs_shell)
    env = docs_shell.exported.setdefault(block.document, dict(docs_shell.env))
    stem = f"{block.document.replace('/', '_')}-{block.line}"
    log, exported = docs_shell.cwd.parent / f"{stem}.log", docs_shell.cwd.parent / f"{stem}.env"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", f"trap 'env -0 > {exported}' EXIT\n{script}"], cwd=docs_shell.cwd, env=env,
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            proc.wait(timeout=block.directive.get("timeout", 600))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the block's whole process group, not only bash
            proc.wait()
            pytest.fail(f"{block.id} ran past its timeout:\n{script}\n---\n{log.read_text()[-6000:]}")
    if exported.exists():
        env.clear()
        env.update(line.split("=", 1) for line in exported.read_text().split("\0") if "=" in line)
    expected = block.directive.get("rc", 0)
    assert proc.returncode == expected, f"{block.id} exited {proc.returncode}, not {expected}:\n{script}\n---\n{log.read_text()[-6000:]}"
    for name, written in block.directive.get("check", {}).items():
        report = docs_shell.cwd / written
        assert report.is_file(), f"{block.id}: no report at {written}"
        getattr(benchmark_reports, name)(json.loads(report.read_text()), log.read_text(), report)


@pytest.mark.slow
def test_the_commands_left_the_environment_pointing_at_this_checkout(docs_shell: Shell) -> None:
    """After every block: julnet still imports from this repository in a fresh process (no block reinstalled it)."""
    proc = subprocess.run([sys.executable, "-c", "import julnet; print(julnet.__file__)"], cwd="/", capture_output=True, text=True)
    assert proc.returncode == 0 and Path(proc.stdout.strip()).is_relative_to(REPO), proc.stdout + proc.stderr


def canaries() -> list[str]:
    """The made-up credentials of the docs' shell and of the services behind it."""
    return [URI_PASSWORD, ENV_PASSWORD, s3_secrets.SECRET_KEY, s3_secrets.SESSION_TOKEN, os.environ["RAY_AUTH_TOKEN"]]


def canary_hits(name: str, data: bytes, found: list[str]) -> None:
    """Record in `found` each canary that `data` (of the thing called `name`) holds, plain or URL-encoded."""
    for canary in canaries():
        if canary.encode() in data or quote(canary, safe="").encode() in data:
            found.append(f"{name}: {canary[:24]}...")


@pytest.mark.slow
def test_no_credential_in_anything_the_commands_wrote(docs_shell: Shell, s3_server, ray_cluster) -> None:
    """Runs after every block: no canary in files, outputs, MLflow, S3 objects or Ray job logs (issue: secrets)."""
    root = docs_shell.cwd.parent
    if not list(root.glob("*.log")):
        pytest.skip("no documented command ran in this session")
    found: list[str] = []
    for path in sorted(root.rglob("*")):  # working copy, runs/, each block's output (*.log), MLflow's db and artifacts
        if path.is_file() and path.suffix != ".env":  # *.env: the shell's own environment, which this test keeps
            canary_hits(str(path.relative_to(root)), path.read_bytes(), found)
    for bucket in s3_server.client.list_buckets()["Buckets"]:
        for page in s3_server.client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for item in page.get("Contents", []):
                body = s3_server.client.get_object(Bucket=bucket["Name"], Key=item["Key"])["Body"].read()
                canary_hits(f"s3://{bucket['Name']}/{item['Key']}", body, found)
    from ray.job_submission import JobSubmissionClient  # after the Ray plugin set the session's token auth

    jobs = JobSubmissionClient(ray_cluster.dashboard)
    listed = jobs.list_jobs()
    assert listed, "the documents submitted no Ray job"
    for job in listed:
        if job.submission_id:
            canary_hits(f"ray job {job.submission_id}", jobs.get_job_logs(job.submission_id).encode(), found)
    assert not found, "credentials leaked into:\n" + "\n".join(found)
