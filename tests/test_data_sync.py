"""AV sync in preprocessing: a known audio delay is measured, undone, recorded; low confidence rejects; no scorer skips.

No SyncNet weights exist on this machine, so the scorer here is one whose correctness can be checked by eye: the
mouth's opening (inner-lip landmarks 62/66 over the mouth width) against the audio's loudness (mean log-mel),
5-frame windows of each, z-scored, compared by syncnet_python's LSE procedure (julnet.evaluation.sync.lse).
What this proves: preprocessing hands each scorer the crops' landmarks and the audio, takes its offset with the
right sign, shifts the audio by it, records offset and confidence, rejects below the threshold and says when the
step is skipped. It does not prove that a SyncNet's own embeddings find offsets (evaluation's tests cover LSE).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from julnet.config import load_config
from julnet.data.preprocess import run
from julnet.data.sync import SyncResult
from julnet.evaluation.av_sync import ExpertScorer
from julnet.evaluation.expert_syncnet import ExpertSyncNet
from julnet.evaluation.sync import lse
from julnet.models.syncnet import clip_stage
from julnet.training.syncnet import manifest_sources, train_syncnet
from tests.conftest import GRID_CLIPS, run_cli
from tests.test_data_tracking import grid_clip, write_clip

DELAY = 3  # frames the audio is made late by


@dataclass
class LipLoudness:
    """A SyncScorer whose embeddings are mouth opening and loudness over 5-frame windows."""

    min_confidence: float = 0.0
    name: str = "lip-opening vs loudness (test scorer)"
    needs_samples: bool = False

    def keep(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        return np.array([abs(points[66, 1] - points[62, 1]) / abs(points[54, 0] - points[48, 0])], np.float32)

    def score(self, kept: np.ndarray, samples: np.ndarray | None, rows: np.ndarray, max_offset: int) -> SyncResult:
        def windows(series: np.ndarray) -> torch.Tensor:
            z = (series - series.mean()) / series.std()
            return torch.from_numpy(np.lib.stride_tricks.sliding_window_view(z, 5).copy())

        result = lse(windows(kept[:, 0]), windows(rows.mean(axis=1)), max_offset)
        return SyncResult(int(result["offset"]), float(result["lse_c"]), float(result["lse_d"]))


def _dataset(tmp_path, name, samples, frames, scorer=None, *overrides):
    write_clip(tmp_path / name / "raw" / f"{name}.mp4", frames, samples)
    cfg = load_config("tiny", ["preprocess.test_fraction=0", "preprocess.val_fraction=0", *overrides])
    return run(str(tmp_path / name / "raw"), str(tmp_path / name / "out"), cfg, scorer=scorer)


def _audio(tmp_path, name, manifest) -> np.ndarray:
    return np.asarray(pq.read_table(tmp_path / name / "out" / manifest.videos[0].shard).column("audio").to_pylist())


def test_a_known_audio_delay_is_found_and_undone(tmp_path):
    frames, samples = grid_clip(0, 75)
    late = np.concatenate([np.zeros(DELAY * 640, np.float32), samples])[: len(samples)]
    original, _ = _dataset(tmp_path, "original", samples, frames, LipLoudness())
    delayed, report = _dataset(tmp_path, "delayed", late, frames, LipLoudness())
    assert report.accepted == 1, report.rejected
    a, b = original.videos[0], delayed.videos[0]
    assert b.av_offset - a.av_offset == -DELAY and b.sync_confidence > 0 and "av_shifted" in b.fixes
    assert delayed.settings["av_sync"].startswith("lip-opening vs loudness (test scorer), max offset 5 frames")
    # after the shift the stored audio windows are the original clip's again (away from the padded edges)
    middle = slice(10, 60)
    fixed, reference = _audio(tmp_path, "delayed", delayed)[middle], _audio(tmp_path, "original", original)[middle]
    assert np.corrcoef(fixed.ravel(), reference.ravel())[0, 1] > 0.98
    unfixed, _ = _dataset(tmp_path, "unfixed", late, frames, None)
    assert np.corrcoef(_audio(tmp_path, "unfixed", unfixed)[middle].ravel(), reference.ravel())[0, 1] < 0.95


def test_low_confidence_is_rejected_and_no_scorer_is_said_skipped(tmp_path):
    frames, samples = grid_clip(0, 40)
    _, report = _dataset(tmp_path, "strict", samples, frames, LipLoudness(min_confidence=1e6))
    assert report.accepted == 0 and [r.reason for r in report.rejected] == ["out_of_sync"]
    manifest, report = _dataset(tmp_path, "none", samples, frames, None)
    assert report.accepted == 1 and manifest.videos[0].av_offset is None and manifest.videos[0].sync_confidence is None
    assert manifest.settings["av_sync"].startswith("skipped: no SyncNet configured")
    off, _ = _dataset(tmp_path, "off", samples, frames, LipLoudness(), "preprocess.av_sync=false")
    assert off.settings["av_sync"] == "skipped: preprocess.av_sync=false" and off.videos[0].av_offset is None
    assert json.loads((tmp_path / "none" / "out" / "manifest.json").read_text())["settings"]["av_sync"].startswith("skipped")


# ---------------------------------------------------------------- the real scorer, through `julnet preprocess`

SYNCNET_STEPS = 20  # a brief pre-training: enough to score, not to find offsets reliably


@pytest.fixture(scope="module")
def own_syncnet(grid_dataset: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny preset's own SyncNet pre-trained briefly on the two GRID clips; returns its weights file."""
    cfg = load_config("tiny", ["train.device=cpu"])
    stage = clip_stage(cfg)
    train, heldout, name = manifest_sources(cfg, stage, grid_dataset)
    metrics = train_syncnet(cfg, train, heldout, SYNCNET_STEPS, tmp_path_factory.mktemp("syncnet"), log_every=SYNCNET_STEPS, heldout=name)
    return metrics["weights"]


def _preprocess_cli(tmp_path: Path, name: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    raw = tmp_path / "raw"
    if not raw.exists():
        raw.mkdir()
        for clip in GRID_CLIPS:
            shutil.copy(clip, raw / clip.name)
    sets = ["preprocess.val_fraction=0", "preprocess.test_fraction=0", *overrides]
    args = ["preprocess", "--config", "tiny", "--input", str(raw), "--output", str(tmp_path / name)]
    return run_cli(*args, *(arg for key in sets for arg in ("--set", key)), check=False)


def test_julnet_preprocess_checks_sync_with_the_configured_own_syncnet(own_syncnet: str, tmp_path: Path):
    proc = _preprocess_cli(tmp_path, "scored", f"syncnet.weights.path={own_syncnet}", "preprocess.min_sync_confidence_own=0")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "scored" / "manifest.json").read_text())
    assert manifest["settings"]["av_sync"] == f"own SyncNet ({own_syncnet}), max offset 5 frames, min LSE-C 0.0"
    assert len(manifest["videos"]) == 2
    for video in manifest["videos"]:
        assert isinstance(video["av_offset"], int) and abs(video["av_offset"]) <= 5, video
        assert video["sync_confidence"] >= 0 and ("av_shifted" in video["fixes"]) == (video["av_offset"] != 0), video
    # the scorer's confidence is what rejects: above any LSE-C, every video is out of sync
    strict = _preprocess_cli(tmp_path, "strict", f"syncnet.weights.path={own_syncnet}", "preprocess.min_sync_confidence_own=1e6")
    assert strict.returncode == 1
    report = json.loads((tmp_path / "strict" / "report.json").read_text())
    assert sorted(r["reason"] for r in report["rejected"]) == ["out_of_sync", "out_of_sync"], report["rejected"]


def test_julnet_preprocess_without_a_syncnet_says_the_step_was_skipped(tmp_path: Path):
    proc = _preprocess_cli(tmp_path, "none")
    assert proc.returncode == 0, proc.stderr
    assert "AV sync skipped: " in proc.stderr and "set syncnet.weights.path" in proc.stderr
    manifest = json.loads((tmp_path / "none" / "manifest.json").read_text())
    assert manifest["settings"]["av_sync"].startswith("skipped: ")
    assert all(v["av_offset"] is None and v["sync_confidence"] is None for v in manifest["videos"])
    missing = _preprocess_cli(tmp_path, "missing", f"syncnet.weights.path={tmp_path / 'nowhere.pt'}")
    assert missing.returncode != 0 and not (tmp_path / "missing" / "manifest.json").exists()
    last = missing.stderr.strip().splitlines()[-1]
    assert last == f"julnet preprocess: error: SyncNet weights not found at syncnet.weights.path={tmp_path / 'nowhere.pt'}", missing.stderr


def test_expert_scorer_scores_syncnet_python_clips_and_says_when_it_cannot():
    torch.manual_seed(0)
    scorer = ExpertScorer(ExpertSyncNet().eval(), "test-only random weights", 3.0)
    frames, samples = grid_clip(0, 12)
    kept = np.stack([scorer.keep(f[:128, :128], np.full((68, 2), np.nan)) for f in frames])
    assert kept.shape == (12, 3, 224, 224) and kept.dtype == np.uint8
    result = scorer.score(kept, samples, np.zeros((12, 80)), 2)
    assert abs(result.offset) <= 2 and result.confidence >= 0 and result.distance > 0
    with pytest.raises(ValueError, match="needs the video's audio samples"):
        scorer.score(kept, None, np.zeros((12, 80)), 2)
    with pytest.raises(ValueError, match="5 frames are too few"):
        scorer.score(kept[:5], samples, np.zeros((5, 80)), 2)
