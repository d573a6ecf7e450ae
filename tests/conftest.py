"""Shared fixtures: the tiny config and helpers for running the CLI in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# One OpenMP/torch thread in this process and in everything it starts (CLI subprocesses, the Ray cluster, docs
# commands): the tests' work is small, and on a 2-core machine shared with Ray and MLflow, spinning OpenMP threads
# made small steps several times slower (two checkpoint tests: 244 s with the default threads, 138 s with one).
# Set before anything imports torch; a caller's own OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from julnet.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.s3_server", "tests.ray_cluster", "tests.mlflow_server"]


# `make test` runs the suite on two pytest-xdist workers, a file at a time (--dist loadfile --no-loadscope-reorder),
# each with its own Ray cluster, MLflow and S3 server. The longest files start first, so the documented-commands
# walk (about half the suite, and idle a third of the time while it waits on Ray) runs beside everything else.
LONGEST_FIRST = ("test_docs.py", "test_distributed.py", "test_tune.py", "test_pipeline.py", "test_generators.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: a file keeps its order


BUILD_LEFTOVERS = (".venv/", ".pytest_cache/", ".gl/", ".whl/")  # what installing and running pytest itself leave


def _untracked() -> set[str]:
    """Files in the checkout that git does not track, ignored ones included, less build and cache files."""
    listed = subprocess.run(["git", "ls-files", "--others", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode()
    return {p for p in listed.split("\0") if p and not p.startswith(BUILD_LEFTOVERS) and "__pycache__/" not in p and ".egg-info/" not in p}


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_checkout() -> Iterator[None]:
    """Fail the session if a test (or the code it runs) wrote a file into the checkout: runs, mlflow.db, mlruns/."""
    before = _untracked()
    yield
    written = sorted(_untracked() - before)
    assert not written, f"the tests wrote into the checkout: {written[:10]}"


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


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset trained for one step on synthetic faces (what `julnet train --steps 1` leaves)."""
    from julnet.data.synthetic import SyntheticFaces
    from julnet.training.loop import train_stage

    cfg = load_config("tiny", ["train.stages.0.steps=1", "train.stages.0.batch_size=1", "train.device=cpu"])
    stage = cfg.train.stages[0]
    out = tmp_path_factory.mktemp("model")
    train_stage(cfg, out, SyntheticFaces(cfg, stage, seed=0).batch, stage)
    return out


GRID_CLIPS = [REPO / "tests" / "data" / "bbaf2n.mpg", REPO / "tests" / "data" / "id2_vcd_swwp2s.mpg"]


@pytest.fixture(scope="session")
def grid_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The two GRID clips preprocessed once into a local dataset (all videos in the train split)."""
    import shutil

    from julnet.data.preprocess import run

    raw = tmp_path_factory.mktemp("grid_raw")
    for clip in GRID_CLIPS:
        shutil.copy(clip, raw / clip.name)
    out = tmp_path_factory.mktemp("grid_dataset")
    cfg = load_config("tiny", ["preprocess.val_fraction=0", "preprocess.test_fraction=0"])
    manifest, report = run(str(raw), str(out), cfg)
    assert report.accepted == 2, report
    return str(out / "manifest.json")


HELDOUT_VIDEO = "id2_vcd_swwp2s"


@pytest.fixture(scope="session")
def heldout(grid_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The GRID dataset copied with one video held out as `test` by video; by identity both videos are `test`."""
    import json
    import shutil

    from julnet.data.manifest import manifest_root

    out = tmp_path_factory.mktemp("heldout")
    shutil.copytree(manifest_root(grid_dataset), out, dirs_exist_ok=True)
    manifest = json.loads((out / "manifest.json").read_text())
    for video in manifest["videos"]:
        video["split_by_video"] = "test" if video["id"] == HELDOUT_VIDEO else "train"
        video["split_by_identity"] = "test"
    (out / "manifest.json").write_text(json.dumps(manifest))
    return str(out / "manifest.json")


@pytest.fixture(scope="module")
def s3_grid(grid_dataset: str, s3_server) -> str:
    """The GRID dataset copied to the S3 test server; returns its manifest URI."""
    from julnet import storage
    from julnet.data.manifest import manifest_root

    bucket = s3_server.make_bucket()
    root = manifest_root(grid_dataset)
    for uri in storage.list_files(root):
        storage.upload_file(uri, f"{bucket}/grid/{uri[len(root) + 1:]}")
    return f"{bucket}/grid/manifest.json"
