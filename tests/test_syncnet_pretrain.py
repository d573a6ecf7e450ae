from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from julnet.config import Config, PretrainedWeights
from julnet.data.synthetic import SyntheticFaces
from julnet.losses.sync import mouth_clip, syncnet_contrastive_loss
from julnet.models.syncnet import SyncNet, clip_stage
from julnet.pretrained import load_into
from julnet.training.syncnet import NO_VAL, SyncNetTrainer, sync_pairs, synthetic_sources, train_syncnet
from tests.conftest import run_cli


def _clip_batch(cfg: Config, batch_size: int, index: int = 0) -> dict[str, torch.Tensor]:
    stage = cfg.train.stages[1].model_copy(update={"batch_size": batch_size})
    return SyntheticFaces(cfg, stage).batch(index)


def test_sync_pairs_are_in_sync_clips_then_the_same_mouths_with_another_clips_audio(tiny: Config):
    batch = _clip_batch(tiny, 4)
    audio, mouths, labels = sync_pairs(batch, tiny.syncnet.mouth_size)
    assert audio.shape == (8, tiny.audio.dim, 5) and mouths.shape == (8, 15, 32, 32) and labels.shape == (8,)
    assert labels.tolist() == [1.0] * 4 + [0.0] * 4
    centre = batch["audio"][:, 2]
    assert torch.equal(audio[:4], centre), "positives take the centre frame's window (frames t-2..t+2)"
    assert torch.equal(mouths[:4], mouth_clip(batch["target"], 32)) and torch.equal(mouths[4:], mouths[:4])
    for i in range(4):
        assert not torch.equal(audio[4 + i], audio[i]), "a negative must not carry its own clip's audio"
        assert torch.equal(audio[4 + i], centre[i - 1])
    as_uint8 = {**batch, "target": (batch["target"] * 255).round().to(torch.uint8)}
    _, mouths8, _ = sync_pairs(as_uint8, 32)
    assert mouths8.dtype == torch.float32 and 0 <= mouths8.min() and mouths8.max() <= 1
    torch.testing.assert_close(mouths8, mouths, atol=1 / 255, rtol=0)


def test_sync_pairs_needs_two_clips(tiny: Config):
    with pytest.raises(ValueError, match="at least 2 clips"):
        sync_pairs(_clip_batch(tiny, 1), tiny.syncnet.mouth_size)


def test_a_trainer_step_minimises_the_contrastive_loss_and_reports_its_pairs(tiny: Config):
    trainer, batch = SyncNetTrainer(tiny, "cpu"), _clip_batch(tiny, 4)
    expected = syncnet_contrastive_loss(trainer.syncnet.train(), *sync_pairs(batch, tiny.syncnet.mouth_size)).item()
    before = [p.clone() for p in trainer.syncnet.parameters()]
    metrics = trainer.step(batch)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["accuracy"] in {i / 8 for i in range(9)} and 0 <= metrics["neg_score"] <= 1 and 0 <= metrics["pos_score"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.syncnet.parameters()))


@pytest.mark.slow
def test_a_short_training_tells_in_sync_from_shifted_and_its_weights_load_back(tiny: Config, tmp_path: Path):
    cfg = tiny.model_copy(deep=True)
    cfg.train.stages[1].batch_size = 32
    train, heldout, source = synthetic_sources(cfg, clip_stage(cfg))
    untrained = SyncNetTrainer(cfg, "cpu").evaluate(heldout())
    assert abs(untrained["sync_accuracy"] - 0.5) <= 0.1, untrained

    metrics = train_syncnet(cfg, train, heldout, steps=60, out_dir=tmp_path, log_every=20, heldout=source)
    held = metrics["eval"]
    assert held["sync_accuracy"] >= 0.75 and held["pos_score"] > held["neg_score"] + 0.2, held
    assert held["pairs"] == 2 * 32 * 32 and metrics["heldout"] == source
    assert [c["step"] for c in metrics["train"]] == [20, 40, 60]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics

    reloaded = SyncNetTrainer(cfg, "cpu")
    reloaded.syncnet = load_into(SyncNet(cfg), PretrainedWeights(path=metrics["weights"]), "SyncNet", "syncnet.weights")
    assert reloaded.evaluate(heldout()) == pytest.approx(held, rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_cli_train_syncnet_synthetic_leaves_weights_and_metrics(tiny: Config, tmp_path: Path):
    out = tmp_path / "sync"
    proc = run_cli("train-syncnet", "--config", "tiny", "--synthetic", "--steps", "3", "--out", str(out), "--set", "train.log_every=1")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["weights"] == str(out / "syncnet.pt") and summary["eval"]["pairs"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and len(metrics["train"]) == 3 and metrics["heldout"].startswith("synthetic")
    state = torch.load(out / "syncnet.pt", weights_only=True)
    assert state.keys() == SyncNet(tiny).state_dict().keys()
    assert "it/s" in proc.stderr and "eta" in proc.stderr and "using 8 clips per batch" in proc.stderr


@pytest.mark.slow
def test_cli_train_syncnet_on_grid_reports_where_heldout_came_from(grid_dataset: str, tiny: Config, tmp_path: Path):
    out = tmp_path / "sync"
    proc = run_cli("train-syncnet", "--config", "tiny", "--data", grid_dataset, "--steps", "4", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heldout"] == NO_VAL and "no val videos" in proc.stderr
    assert metrics["eval"]["pairs"] == 2 * 2 * 15, "both 75-frame GRID videos give 15 clips each"
    assert all(v == v for v in metrics["eval"].values()) and metrics["train"][-1]["step"] == 4
    load_into(SyncNet(tiny), PretrainedWeights(path=metrics["weights"]), "SyncNet", "syncnet.weights")


def test_cli_train_syncnet_wants_exactly_one_data_source(tmp_path: Path):
    proc = run_cli("train-syncnet", "--steps", "1", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "--synthetic" in proc.stderr and "--data" in proc.stderr
