from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from julnet.config import Config
from julnet.models import checkpoint as ckpt
from julnet.models.build import build_models, build_optimizers
from tests.conftest import run_cli

FAST = ["--set", "train.stages.0.batch_size=2"]


def _train(out: Path, steps: int, *extra: str) -> dict:
    proc = run_cli("train", "--config", "tiny", "--synthetic", "--steps", str(steps), "--out", str(out), *FAST, *extra)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_resuming_in_a_fresh_process_equals_an_uninterrupted_run(tmp_path: Path):
    k, n = 2, 4
    _train(tmp_path / "resumed", k)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [f"step-{k:08d}"]
    resumed = _train(tmp_path / "resumed", n)
    straight = _train(tmp_path / "straight", n)
    a, b = ckpt.load_checkpoint(Path(resumed["checkpoint"])), ckpt.load_checkpoint(Path(straight["checkpoint"]))
    assert a["step"] == b["step"] == n
    for name in a["models"]:
        for key, value in a["models"][name].items():
            assert torch.equal(value, b["models"][name][key]), f"{name}.{key} differs"
    for name in a["optimizers"]:
        for index, state in a["optimizers"][name]["state"].items():
            assert torch.equal(state["exp_avg"], b["optimizers"][name]["state"][index]["exp_avg"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, n + 1)), "each step logged exactly once across the restart"


def test_checkpoint_round_trip_restores_everything(tiny: Config, tmp_path: Path):
    models = build_models(tiny)
    opts = build_optimizers(tiny, models)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with torch.no_grad():
        models.talking_face.generator.face_decoder.to_image.bias.fill_(0.25)
    torch.manual_seed(123)
    state = ckpt.training_state(tiny, models, opts, scaler, step=7, stage="frame")
    expected_draw = torch.rand(3)
    path = ckpt.save_checkpoint(tmp_path, state, keep_last=2)
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml", "state.pt"]

    fresh = build_models(tiny)
    fresh_opts = build_optimizers(tiny, fresh)
    loaded = ckpt.load_checkpoint(path)
    ckpt.restore_training_state(loaded, fresh, fresh_opts, scaler)
    assert loaded["step"] == 7 and loaded["stage"] == "frame" and loaded["config"] == tiny.to_dict()
    assert torch.equal(fresh.talking_face.generator.face_decoder.to_image.bias, models.talking_face.generator.face_decoder.to_image.bias)
    assert torch.equal(torch.rand(3), expected_draw), "RNG state restored"
    assert set(loaded["models"]) == {"generator", "uncertainty", "frame_discriminator", "clip_discriminator"}
    assert set(loaded["optimizers"]) == {"generator", "frame_discriminator", "clip_discriminator"}


def test_failed_save_leaves_nothing_under_the_final_name(tiny: Config, tmp_path: Path, monkeypatch):
    models = build_models(tiny)
    state = ckpt.training_state(tiny, models, build_optimizers(tiny, models), torch.amp.GradScaler("cpu", enabled=False), 5, "frame")

    def broken_save(obj, f):
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, state, keep_last=3)
    assert list(tmp_path.iterdir()) == []
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_only_the_newest_checkpoints_are_kept(tiny: Config, tmp_path: Path):
    models = build_models(tiny)
    opts = build_optimizers(tiny, models)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for step in (1, 2, 10, 3):
        ckpt.save_checkpoint(tmp_path, ckpt.training_state(tiny, models, opts, scaler, step, "frame"), keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000003", "step-00000010"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000010"


def test_resume_refuses_a_different_model(tmp_path: Path):
    _train(tmp_path / "run", 1)
    proc = run_cli(
        "train", "--config", "tiny", "--synthetic", "--steps", "2", "--out", str(tmp_path / "run"), *FAST,
        "--set", "hist.bins=9", check=False,
    )
    assert proc.returncode == 2 and "hist.bins" in proc.stderr


def test_warm_start_from_a_previous_stage(tmp_path: Path):
    first = _train(tmp_path / "frame", 1)
    second = _train(tmp_path / "clip", 1, "--stage", "clip", "--init", first["checkpoint"])
    state = ckpt.load_checkpoint(Path(second["checkpoint"]))
    assert state["stage"] == "clip" and state["step"] == 1
    assert "sync" in second["metrics"]


def test_a_restart_that_ray_gave_no_checkpoint_resumes_from_the_newest_stored_one(tmp_path):
    """Ray can lose a checkpoint report when a worker dies before its controller polls it (seen in CI: the group
    restarted at step 1 although step 3 was stored); the worker then takes the newest complete stored checkpoint."""
    from julnet.training.distributed import _stored_checkpoint

    stage = tmp_path / "run" / "frame"
    assert _stored_checkpoint(str(stage)) is None
    for step, complete in ((3, True), (6, True), (9, False)):  # step 9: an upload cut short, no state.pt yet
        (stage / f"step-{step:08d}").mkdir(parents=True)
        if complete:
            (stage / f"step-{step:08d}" / "state.pt").write_bytes(b"x")
    checkpoint = _stored_checkpoint(str(stage))
    assert checkpoint is not None and checkpoint.path == str(stage / "step-00000006")
