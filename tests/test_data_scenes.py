"""Scene cuts split a video into shots: chunks, crop smoothing and references never cross one."""

from __future__ import annotations

import glob

import numpy as np
import pyarrow.parquet as pq

from julnet.config import load_config
from julnet.data.loader import examples_per_epoch, iter_examples
from julnet.data.preprocess import run
from julnet.data.scenes import frame_signature, segment_starts
from julnet.data.video import read_frames
from tests.conftest import REPO
from tests.test_data_tracking import frame_of, grid_clip, stored_crops, write_clip


def test_no_cut_is_found_inside_any_grid_clip():
    p = load_config("tiny").preprocess
    clips = sorted(glob.glob(str(REPO / "examples" / "grid" / "*.mpg")))
    assert len(clips) == 8
    for clip in clips:
        assert segment_starts([frame_signature(f) for f in read_frames(clip)], p.scene_cut_histogram, p.scene_cut_pixels) == [0], clip


def test_two_clips_back_to_back_become_two_shots_and_references_stay_in_their_shot(tmp_path):
    (a, a_audio), (b, b_audio) = grid_clip(0, 30), grid_clip(1, 30)
    write_clip(tmp_path / "raw" / "cut.mp4", np.concatenate([a, b]), np.concatenate([a_audio, b_audio]))
    cfg = load_config("tiny", ["preprocess.test_fraction=0", "preprocess.val_fraction=0"])
    manifest, report = run(str(tmp_path / "raw"), str(tmp_path / "out"), cfg)
    assert report.accepted == 1, report.rejected
    video = manifest.videos[0]
    assert video.segments == [0, 30] and "scene_cut" in video.fixes and len(video.row_groups) == 2
    shard = pq.ParquetFile(tmp_path / "out" / video.shard)
    groups = [shard.read_row_group(g, columns=["frame_index"]).column(0).to_pylist() for g in video.row_groups]
    assert groups == [list(range(30)), list(range(30, 60))]
    stage = cfg.train.stages[0]
    crops = stored_crops(tmp_path / "out", "cut", (stage.height, stage.width))
    manifest_uri = str(tmp_path / "out" / "manifest.json")
    examples = list(iter_examples(manifest_uri, stage, 5))
    assert len(examples) == examples_per_epoch(manifest_uri, stage, window=5) == 60
    for example in examples:
        shot = frame_of(example["target"], crops) >= 30
        refs = example["references"].reshape(-1, 3, stage.height, stage.width)
        assert all((frame_of(r, crops) >= 30) == shot for r in refs)
