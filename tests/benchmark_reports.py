"""What each benchmark's report must hold, checked on the reports the documented commands write.

docs/benchmarks.md and docs/benchmarks-gpu.md run every benchmark script (tests/test_docs.py, at the reduced
settings of each block's `test` comment); a block's `"check"` names the function here that reads what it wrote.
One run of each script carries both the docs check and these, instead of running each script twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _torch_version() -> str:
    import torch

    return torch.__version__


def _timed_rows_are_positive(row: dict) -> None:
    keys = ("s_per_step_median", "s_per_step_min", "s_per_step_max", "samples_per_s", "frames_per_s", "gflop_per_step", "tflops")
    for key in keys:
        assert row[key] > 0 and row["no_uncertainty"][key] > 0, key
    assert row["un_overhead_ratio"] > 0
    assert row["un_flop_ratio"] > 1  # the uncertainty module costs FLOPs; the stub costs none
    assert row["mfu"] is None  # no peak on a CPU


def gpu_check(report: dict, log: str, path: Path) -> None:
    """benchmarks/gpu_check.py on the CPU: the tiny preset at 80x64, batches 1 and 2, one repeat."""
    assert "batch 1" in log and "done in" in log  # progress lines
    assert report["forbidden_imports"] == []  # no Ray, MLflow, dlib or PyAV: the GPU machine has none of them
    assert report["errors"] == [] and report["skipped"] == []
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == _torch_version()
    settings = report["settings"]
    assert settings["preset"] == "tiny" and settings["precision"] == "fp32" and "random" in settings["random_weights"]
    for kind, clip_len in (("frame", 1), ("clip", 5)):
        part = report["train"][kind]
        assert part["clip_len"] == clip_len and part["largest_batch"] == 2
        assert [r["batch"] for r in part["results"]] == [1, 2]
        for row in part["results"]:
            _timed_rows_are_positive(row)
            assert row["frames_per_s"] == pytest.approx(row["samples_per_s"] * clip_len)
        # batch 2 does twice batch 1's counted work
        assert part["results"][1]["gflop_per_step"] == pytest.approx(2 * part["results"][0]["gflop_per_step"], rel=0.01)
    rows = {(r["batch"], r["precision"]) for r in report["inference"]["results"]}
    assert rows == {(1, "fp32"), (2, "fp32")}
    assert all(r["frames_per_s"] > 0 for r in report["inference"]["results"])


def dinet_ratio(report: dict, log: str, path: Path) -> None:
    """benchmarks/dinet_ratio.py against the stand-in DINet checkout (tests/data/dinet_standin), 80x64."""
    repeats = report["settings"]["repeats"]
    assert report["machine"]["torch"] == _torch_version() and report["parameters"]["dinet"] < report["parameters"]["julnet_generator"]
    assert set(report["train"]) == {"dinet", "julnet_generator", "julnet_with_uncertainty"}
    assert set(report["inference"]) == {"dinet", "julnet_with_uncertainty", "julnet_folded"}
    assert set(report["step"]) == {"dinet", "julnet_full", "julnet_no_uncertainty"}
    parts = ("train", "inference", "step")
    assert all(row["repeats"] == repeats and 0 < row["min_s"] <= row["median_s"] <= row["max_s"] for part in parts for row in report[part].values())
    step_gflop = {name: row["gflop"] for name, row in report["step"].items()}
    # The stand-in generator is far smaller than julnet's, and the uncertainty module adds FLOPs to julnet's step.
    assert 0 < step_gflop["dinet"] < step_gflop["julnet_no_uncertainty"] < step_gflop["julnet_full"]
    assert set(report["ratios"]) == {"train_generator", "train_with_uncertainty", "inference_with_uncertainty", "inference_folded",
                                     "step_full", "step_no_uncertainty"}
    assert all(ratio > 0 for ratio in report["ratios"].values()) and "ratio" in log
    # Per-round ratios: every julnet variant over DINet in the same round, summarised for each part.
    assert {part: set(rows) for part, rows in report["round_ratios"].items()} == {part: set(report[part]) - {"dinet"} for part in parts}
    assert all(0 < r["min"] <= r["median"] <= r["max"] for rows in report["round_ratios"].values() for r in rows.values())
    assert log.count("; per round ") == 6


def train_step_clip(report: dict, log: str, path: Path) -> None:
    """benchmarks/train_step.py, the tiny preset's clip stage at batch 1, one repeat."""
    assert "machine:" in log and "no GPU" in log and "ratio" in log
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == _torch_version()
    settings = report["settings"]
    assert (settings["config"], settings["kind"], settings["batch"], settings["precision"]) == ("tiny", "clip", 1, "fp32")
    assert settings["channels_last"] is False and settings["fused_adam"] is False and settings["peak_tflops"] is None
    row = report["result"]
    assert row["batch"] == 1 and row["frames_per_step"] == 5 and row["repeats"] == 1
    _timed_rows_are_positive(row)


def _no_partial_beside(path: Path) -> None:
    assert not (path.parent / f".{path.name}.partial").exists(), "a partial file was left beside the figures"


def generate_fps_speed(report: dict, log: str, path: Path) -> None:
    """benchmarks/generate_fps.py, 0.4 s of speech at 25 fps, with 0 and 2 epistemic samples."""
    assert "machine:" in log and "no GPU" in log
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == _torch_version()
    assert report["kind"] == "speed" and [(r["epistemic_samples"], r["frames"]) for r in report["runs"]] == [(0, 10), (2, 10)]
    for figures in report["runs"]:  # the networks are part of the generation pass, which is part of the whole call
        assert figures["model_fps"]["median"] > figures["generate_fps"]["median"] > figures["end_to_end_fps"]["median"] > 0
    _no_partial_beside(path)


def generate_fps_actors(report: dict, log: str, path: Path) -> None:
    """benchmarks/generate_fps.py --actors 1 2: the batch job over two pairs of 0.4 s each."""
    assert "machine:" in log and "no GPU" in log
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == _torch_version()
    runs = report["runs"]
    assert report["kind"] == "batch" and [(r["actors"], r["frames"]) for r in runs] == [(1, 20), (2, 20)]
    assert all(r["frames_per_s"]["median"] > 0 and r["frames_per_s"]["min"] <= r["frames_per_s"]["max"] for r in runs)
    _no_partial_beside(path)


def landmarks(report: dict, log: str, path: Path) -> None:
    """benchmarks/landmarks_fps.py at 640x360, 3 frames, the detector every 3rd frame."""
    assert "machine:" in log and "frames/s" in log
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == _torch_version()
    [result] = report["results"]
    assert (result["width"], result["height"], result["frames"]) == (640, 360, 3)
    modes = result["modes"]
    assert set(modes) == {"full", "downscaled", "downscaled+following"}
    for row in modes.values():
        assert row["frames_per_s_median"] > 0 and row["repeats"] == 1 and row["frames_with_face"] == 3
    assert modes["full"]["mean_px_from_full"] == 0 and modes["full"]["detect_size"] is None
    assert 0 < modes["downscaled+following"]["mean_px_from_full"] < 3  # frames 1 and 2 followed, not detected


def train_scaling(report: dict, log: str, path: Path) -> None:
    """benchmarks/train_scaling.py: one timed step of the tiny preset on 1 and on 2 Ray workers."""
    assert "machine:" in log and "samples/s" in log
    assert report["machine"]["cpu_cores"] > 0 and report["machine"]["torch"] == _torch_version()
    assert [(r["preset"], r["workers"], r["batch_per_worker"], r["timed_steps"]) for r in report["results"]] == [("tiny", 1, 1, 1), ("tiny", 2, 1, 1)]
    for row in report["results"]:
        assert row["samples_per_s_median"] > 0 and row["fit_wall_s"] > 0 and (row["height"], row["width"]) == (104, 80)


def loader(report: dict, log: str, path: Path) -> None:
    """benchmarks/loader_throughput.py: the GRID clips' shards read locally and through S3, and the trainer."""
    assert "machine:" in log and "trainer consumes" in log
    assert report["machine"]["torch"] == _torch_version()
    assert (report["settings"]["config"], report["settings"]["height"], report["settings"]["width"]) == ("tiny", 104, 80)
    local, s3, trainer = (report["results"][k] for k in ("local", "s3", "trainer"))
    assert local["examples_per_epoch"] == s3["examples_per_epoch"] > 0  # the same shards, read through S3
    assert local["examples_per_s_median"] > 0 and s3["examples_per_s_median"] > 0 and local["epochs"] == 1
    assert trainer["samples_per_s"] > 0 and trainer["repeats"] == 1
