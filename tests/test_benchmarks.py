"""The GPU check script (benchmarks/gpu_check.py) still runs: a CPU smoke run of the tiny preset, shrunk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_writes_every_figure(tmp_path: Path):
    out = tmp_path / "gpu_check.json"
    # The tiny preset at 80x64 (much smaller leaves the ID encoder's last batch norm 1x1 at batch 1), 1 repeat,
    # no warm-up, batches 1 and 2: about 30 steps on the CPU.
    shrink = [f"--set=train.stages.{i}.{key}={value}" for i in (0, 1) for key, value in (("height", 80), ("width", 64))]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--preset", "tiny", *shrink,
         "--repeats", "1", "--warmup", "0", "--max-batch", "2", "--infer-batches", "1", "2", "--budget-s", "100000",
         "--json", str(out)],
        # One thread: on a shared 2-core machine, OpenMP's spinning threads made each tiny step 10-50x slower.
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "batch 1" in proc.stdout and "done in" in proc.stdout  # progress lines
    report = json.loads(out.read_text())

    assert report["forbidden_imports"] == []  # no Ray, MLflow, dlib or PyAV: the GPU machine has none of them
    assert report["errors"] == [] and report["skipped"] == []
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"]
    settings = report["settings"]
    assert settings["preset"] == "tiny" and settings["precision"] == "fp32" and "random" in settings["random_weights"]

    for kind, clip_len in (("frame", 1), ("clip", 5)):
        part = report["train"][kind]
        assert part["clip_len"] == clip_len and part["largest_batch"] == 2
        assert [r["batch"] for r in part["results"]] == [1, 2]
        for row in part["results"]:
            for key in ("s_per_step_median", "s_per_step_min", "s_per_step_max", "samples_per_s", "frames_per_s", "gflop_per_step", "tflops"):
                assert row[key] > 0, (kind, row["batch"], key)
                assert row["no_uncertainty"][key] > 0, (kind, row["batch"], key)
            assert row["frames_per_s"] == pytest.approx(row["samples_per_s"] * clip_len)
            assert row["un_overhead_ratio"] > 0
            assert row["un_flop_ratio"] > 1  # the uncertainty module costs FLOPs; the stub costs none
            assert row["mfu"] is None  # no peak on a CPU
        # batch 2 does twice batch 1's counted work
        assert part["results"][1]["gflop_per_step"] == pytest.approx(2 * part["results"][0]["gflop_per_step"], rel=0.01)

    rows = {(r["batch"], r["precision"]) for r in report["inference"]["results"]}
    assert rows == {(1, "fp32"), (2, "fp32")}
    assert all(r["frames_per_s"] > 0 for r in report["inference"]["results"])


def test_dinet_ratio_benchmark_times_both_models_side_by_side(tmp_path: Path):
    out = tmp_path / "dinet_ratio.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "dinet_ratio.py"), "--dinet", str(REPO / "tests" / "data" / "dinet_standin"),
         "--config", "tiny", "--size", "80x64", "--repeats", "2", "--warmup", "0", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["torch"] == torch_version() and report["parameters"]["dinet"] < report["parameters"]["julnet_generator"]
    assert set(report["train"]) == {"dinet", "julnet_generator", "julnet_with_uncertainty"}
    assert set(report["inference"]) == {"dinet", "julnet_with_uncertainty", "julnet_folded"}
    assert set(report["step"]) == {"dinet", "julnet_full", "julnet_no_uncertainty"}
    parts = ("train", "inference", "step")
    assert all(row["repeats"] == 2 and 0 < row["min_s"] <= row["median_s"] <= row["max_s"] for part in parts for row in report[part].values())
    step_gflop = {name: row["gflop"] for name, row in report["step"].items()}
    # The stand-in generator is far smaller than julnet's, and the uncertainty module adds FLOPs to julnet's step.
    assert 0 < step_gflop["dinet"] < step_gflop["julnet_no_uncertainty"] < step_gflop["julnet_full"]
    assert set(report["ratios"]) == {"train_generator", "train_with_uncertainty", "inference_with_uncertainty", "inference_folded",
                                     "step_full", "step_no_uncertainty"}
    assert all(ratio > 0 for ratio in report["ratios"].values()) and "ratio" in proc.stdout
    # Per-round ratios: every julnet variant over DINet in the same round, summarised for each part.
    assert {part: set(rows) for part, rows in report["round_ratios"].items()} == {part: set(report[part]) - {"dinet"} for part in parts}
    assert all(0 < r["min"] <= r["median"] <= r["max"] for rows in report["round_ratios"].values() for r in rows.values())
    assert proc.stdout.count("; per round ") == 6


def test_dinet_ratio_benchmark_names_a_checkout_without_dinet(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dinet_ratio.py"), "--dinet", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and f"--dinet {tmp_path}: no models/DINet.py there" in proc.stderr


@pytest.mark.slow
def test_train_step_benchmark_runs_one_iteration_on_the_tiny_preset(tmp_path: Path):
    out = tmp_path / "train_step.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_step.py"), "--config", "tiny", "--stage", "clip", "--batch", "1",
         "--repeats", "1", "--warmup", "0", "--threads", "1", "--device", "cpu",
         "--set=train.stages.1.height=80", "--set=train.stages.1.width=64", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "no GPU" in proc.stdout and "ratio" in proc.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == torch_version()
    settings = report["settings"]
    assert (settings["config"], settings["kind"], settings["batch"], settings["precision"]) == ("tiny", "clip", 1, "fp32")
    assert settings["channels_last"] is False and settings["fused_adam"] is False and settings["peak_tflops"] is None
    row = report["result"]
    assert row["batch"] == 1 and row["frames_per_step"] == 5 and row["repeats"] == 1
    for key in ("s_per_step_median", "s_per_step_min", "s_per_step_max", "samples_per_s", "frames_per_s", "gflop_per_step", "tflops"):
        assert row[key] > 0 and row["no_uncertainty"][key] > 0, key
    assert row["un_overhead_ratio"] > 0 and row["un_flop_ratio"] > 1 and row["mfu"] is None


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--epistemic-samples", "0", "2"], ["--actors", "1", "2", "--pairs", "2"]], ids=["speed", "batch"])
def test_generate_fps_benchmark_runs_once_on_the_tiny_preset(tmp_path: Path, mode: list[str]):
    out = tmp_path / "generate_fps.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "generate_fps.py"), "--presets", "tiny", "--seconds", "0.4", "--height", "104",
         "--width", "80", "--repeats", "1", "--warmup", "0", *mode, "--json", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "no GPU" in proc.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == torch_version()
    runs = report["runs"]
    if "--actors" not in mode:
        assert report["kind"] == "speed" and [(r["epistemic_samples"], r["frames"]) for r in runs] == [(0, 10), (2, 10)]
        for figures in runs:  # the networks are part of the generation pass, which is part of the whole call
            assert figures["model_fps"]["median"] > figures["generate_fps"]["median"] > figures["end_to_end_fps"]["median"] > 0
    else:
        assert report["kind"] == "batch" and [(r["actors"], r["frames"]) for r in runs] == [(1, 20), (2, 20)]
        assert all(r["frames_per_s"]["median"] > 0 and r["frames_per_s"]["min"] <= r["frames_per_s"]["max"] for r in runs)
    assert list(tmp_path.iterdir()) == [out]  # no partial file left beside it


def torch_version() -> str:
    import torch

    return torch.__version__


def test_landmarks_benchmark_runs_one_iteration_and_following_agrees_with_full_resolution(tmp_path: Path):
    out = tmp_path / "landmarks.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "landmarks_fps.py"), "--sizes", "640x360", "--frames", "3", "--repeats", "1",
         "--warmup", "0", "--redetect-every", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "frames/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == torch_version()
    [result] = report["results"]
    assert (result["width"], result["height"], result["frames"]) == (640, 360, 3)
    modes = result["modes"]
    assert set(modes) == {"full", "downscaled", "downscaled+following"}
    for row in modes.values():
        assert row["frames_per_s_median"] > 0 and row["repeats"] == 1 and row["frames_with_face"] == 3
    assert modes["full"]["mean_px_from_full"] == 0 and modes["full"]["detect_size"] is None
    assert 0 < modes["downscaled+following"]["mean_px_from_full"] < 3  # frames 1 and 2 followed, not detected


@pytest.mark.slow
def test_train_scaling_benchmark_runs_one_step_on_1_and_2_ray_workers(tmp_path: Path, grid_dataset: str):
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_scaling.py"), "--presets", "tiny", "--workers", "1", "2", "--steps", "1",
         "--warmup", "0", "--batch", "1", "--data", grid_dataset, "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "samples/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == torch_version()
    assert [(r["preset"], r["workers"], r["batch_per_worker"], r["timed_steps"]) for r in report["results"]] == [("tiny", 1, 1, 1), ("tiny", 2, 1, 1)]
    for row in report["results"]:
        assert row["samples_per_s_median"] > 0 and row["fit_wall_s"] > 0 and (row["height"], row["width"]) == (104, 80)


@pytest.mark.slow
def test_loader_benchmark_reads_local_and_s3_shards_and_times_the_trainer(tmp_path: Path, grid_dataset: str):
    out = tmp_path / "loader.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loader_throughput.py"), "--config", "tiny", "--manifest", grid_dataset,
         "--epochs", "1", "--warmup", "0", "--train-repeats", "1", "--train-warmup", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "trainer consumes" in proc.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["torch"] == torch_version()
    assert (report["settings"]["config"], report["settings"]["height"], report["settings"]["width"]) == ("tiny", 104, 80)
    local, s3, trainer = (report["results"][k] for k in ("local", "s3", "trainer"))
    assert local["examples_per_epoch"] == s3["examples_per_epoch"] > 0  # the same shards, read through S3
    assert local["examples_per_s_median"] > 0 and s3["examples_per_s_median"] > 0 and local["epochs"] == 1
    assert trainer["samples_per_s"] > 0 and trainer["repeats"] == 1
