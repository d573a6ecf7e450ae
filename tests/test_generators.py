"""Generator families (issue 16): each builds from `generator.kind`, carries the uncertainty module, trains through
the Ray job, dubs a clip, and refuses the other family's checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from julnet.config import ConfigError, load_config
from julnet.models.talking_face import build_talking_face
from julnet.models.build import build_models, build_optimizers
from julnet.models.checkpoint import load_model_weights, training_state
from tests.conftest import GRID_CLIPS, REPO, run_cli

FAMILIES = {"tiny": "julnet", "wav2lip-tiny": "wav2lip"}


def _inputs(preset: str, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = load_config(preset)
    stage = cfg.train.stages[0]
    torch.manual_seed(0)
    return (torch.rand(batch, 3, stage.height, stage.width), torch.rand(batch, 3 * cfg.generator.num_references, stage.height, stage.width),
            torch.randn(batch, cfg.audio.dim, cfg.audio.window))


def test_the_mouth_region_stays_centred_on_the_mouth_in_a_square_crop():
    from julnet.face import mouth_box

    assert [mouth_box(h, w) for h, w in ((416, 320), (208, 160), (104, 80))] == [(128, 32, 256), (64, 16, 128), (32, 8, 64)]
    top, left, side = mouth_box(96, 96)  # wav2lip's crop: a 416x320 crop resized, the mouth box's centre at x = 160/320
    assert (top, side) == (30, 59) and abs(left + side / 2 - 48) <= 0.5


@pytest.mark.parametrize("preset", FAMILIES)
@pytest.mark.parametrize("use_features", [True, False])
def test_each_family_carries_the_uncertainty_module(preset: str, use_features: bool):
    cfg = load_config(preset, [f"un.use_features={str(use_features).lower()}"])
    face = build_talking_face(cfg)
    assert face.generator.kind == FAMILIES[preset]
    assert face.uncertainty.feature_channels == (face.generator.feature_channels if use_features else 0)
    source, refs, audio = _inputs(preset)
    gen, unc = face(source, refs, audio)
    assert gen.image.shape == source.shape and 0 <= gen.image.min() and gen.image.max() <= 1
    assert unc.log_sigma.shape == unc.error_pred.shape == (2, 1, *source.shape[-2:])
    unc.log_sigma.mean().backward()  # σ's gradient reaches the generator through its image (and features)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in face.generator.parameters())


def test_wav2lip_repaints_from_the_upper_half_of_the_source_and_the_audio():
    face = build_talking_face(load_config("wav2lip-tiny")).eval()
    source, refs, audio = (x.requires_grad_() for x in _inputs("wav2lip-tiny"))
    face(source, refs, audio).generated.image.sum().backward()
    half = source.shape[-2] // 2
    assert torch.count_nonzero(source.grad[..., half:, :]) == 0, "the lower half is masked"
    assert torch.count_nonzero(source.grad[..., :half, :]) > 0 and torch.count_nonzero(refs.grad) > 0
    assert torch.count_nonzero(audio.grad) > 0


def test_the_train_mode_of_the_models_reaches_the_talking_face_itself():
    models = build_models(load_config("wav2lip-tiny"), pretrained=False).train(False)
    assert not models.talking_face.training and not models.talking_face.uncertainty.training
    assert models.train().talking_face.training


def test_a_checkpoint_of_one_family_is_refused_by_the_other_in_one_line():
    wav2lip, julnet = load_config("wav2lip-tiny"), load_config("tiny")
    theirs = build_models(wav2lip, pretrained=False)
    state = training_state(wav2lip, theirs, build_optimizers(wav2lip, theirs), torch.amp.GradScaler("cpu", enabled=False), 1, "frame")
    with pytest.raises(ConfigError) as caught:
        load_model_weights(state, build_models(julnet, pretrained=False))
    assert len(str(caught.value).splitlines()) == 1
    assert "generator.kind=julnet" in str(caught.value) and "generator.kind=wav2lip" in str(caught.value)
    del state["config"]["generator"]["kind"]  # checkpoints from before generator.kind hold the julnet generator
    with pytest.raises(ConfigError, match="of generator.kind=julnet"):
        load_model_weights(state, theirs)


# ---- end to end: the Ray job trains each family, julnet generate dubs a clip with it ---------------------------


@pytest.fixture(scope="module", params=list(FAMILIES))
def ray_run(request, ray_cluster, grid_dataset, mlflow_server, tmp_path_factory) -> Path:
    """A family's tiny preset trained 2 steps on the GRID shards through `python ray_jobs/train.py`."""
    preset, storage = request.param, tmp_path_factory.mktemp("families")
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address, "PYTHONPATH": str(REPO)}
    args = ["--config", preset, "--data", grid_dataset, "--storage", str(storage), "--name", preset, "--stages", "frame",
            "--set", "train.stages.0.steps=2", "--set", "train.checkpoint_every=2", "--set", f"tracking.uri={mlflow_server.uri}"]
    proc = subprocess.run([sys.executable, "ray_jobs/train.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage / preset


@pytest.mark.slow
def test_each_family_trains_through_the_ray_job_and_dubs_a_clip(ray_run: Path, tmp_path: Path):
    video, speech = GRID_CLIPS
    out, report = tmp_path / "dubbed.mp4", tmp_path / "dubbed.json"
    run_cli("generate", "--video", str(video), "--audio", str(speech), "--model", str(ray_run), "--out", str(out), "--report", str(report))
    summary = json.loads(report.read_text())["summary"]
    cfg = load_config(ray_run.name)
    assert out.stat().st_size > 0 and summary["crop_size"] == [cfg.train.stages[0].width, cfg.train.stages[0].height]


@pytest.mark.slow
def test_julnet_train_refuses_to_warm_start_from_the_other_family(model_dir: Path, tmp_path: Path):
    proc = run_cli("train", "--config", "wav2lip-tiny", "--synthetic", "--out", str(tmp_path / "out"), "--steps", "1",
                   "--init", str(model_dir), check=False)
    assert proc.returncode != 0
    assert "generator.kind=wav2lip cannot load a checkpoint of generator.kind=julnet" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_ray_job_refuses_the_other_familys_init_before_any_worker_starts(model_dir, ray_cluster, grid_dataset, mlflow_server, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address, "PYTHONPATH": str(REPO)}
    args = ["--config", "wav2lip-tiny", "--data", grid_dataset, "--storage", str(tmp_path / "runs"), "--name", "cross", "--init", str(model_dir),
            "--set", f"tracking.uri={mlflow_server.uri}"]
    proc = subprocess.run([sys.executable, "ray_jobs/train.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("julnet train: error: generator.kind=wav2lip cannot load a checkpoint of generator.kind=julnet"), last
    assert not (tmp_path / "runs").exists(), "nothing trained, nothing stored"
