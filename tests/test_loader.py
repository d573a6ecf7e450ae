from __future__ import annotations

import numpy as np
import pytest
import torch

from julnet import storage
from julnet.config import StageConfig
from julnet.data.examples import decode_frames
from julnet.data.loader import TORCH_DTYPES, collate, examples_dataset, examples_per_epoch, interleave, iter_examples, plan_units
from julnet.data.manifest import manifest_root, read_manifest
from julnet.data.shards import read_row_group
from julnet.face import mouth_box

STAGES = [
    StageConfig(name="f104", kind="frame", height=104, width=80, batch_size=4, steps=1),
    StageConfig(name="f208", kind="frame", height=208, width=160, batch_size=4, steps=1),
    StageConfig(name="f416", kind="frame", height=416, width=320, batch_size=2, steps=1),
    StageConfig(name="clip", kind="clip", height=104, width=80, batch_size=2, steps=1),
]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_examples_have_the_stage_shapes_and_ranges(grid_dataset, stage):
    examples = list(iter_examples(grid_dataset, stage, num_references=5, seed=0))
    assert examples_per_epoch(grid_dataset, stage, window=5) == len(examples)
    h, w = stage.height, stage.width
    top, left, side = mouth_box(h, w)
    if stage.kind == "frame":
        assert len(examples) == 150, "every frame of both clips is a target once per epoch"
        shapes = {"target": (3, h, w), "source": (3, h, w), "references": (15, h, w), "audio": (80, 5)}
    else:
        assert len(examples) == 2 * 15, "every run of 5 frames is a clip once per epoch"
        shapes = {"target": (5, 3, h, w), "source": (5, 3, h, w), "references": (15, h, w), "audio": (5, 80, 5)}
    for e in examples[:10]:
        assert {k: v.shape for k, v in e.items()} == shapes
        assert e["target"].dtype == np.uint8 and e["audio"].dtype == np.float32 and np.isfinite(e["audio"]).all()
        assert e["target"].std() > 10, "a real face, not a blank"
        assert (e["source"][..., top : top + side, left : left + side] == 0).all()
        assert np.array_equal(e["source"][..., :top, :], e["target"][..., :top, :])
    batch = collate(examples[: stage.batch_size])
    assert {k: v.dtype for k, v in batch.items()} == TORCH_DTYPES


def _frames_by_video(manifest_uri: str, size: tuple[int, int]) -> dict[str, np.ndarray]:
    manifest, root = read_manifest(manifest_uri), manifest_root(manifest_uri)
    out = {}
    for video in manifest.videos:
        jpegs = read_row_group(manifest.shard_uri(root, video.shard), video.row_groups[0], ["jpeg"]).column("jpeg").to_pylist()
        out[video.id] = np.moveaxis(decode_frames(jpegs, (416, 320), size), -1, 1)
    return out


def test_references_come_from_the_same_video_and_never_equal_the_target(grid_dataset):
    stage = STAGES[0]
    frames = _frames_by_video(grid_dataset, (stage.height, stage.width))
    for e in iter_examples(grid_dataset, stage, num_references=5, seed=3):
        (vid, t), = [(v, i) for v, f in frames.items() for i in np.flatnonzero((f == e["target"]).all(axis=(1, 2, 3)))]
        refs = e["references"].reshape(5, 3, stage.height, stage.width)
        for ref in refs:
            matches = np.flatnonzero((frames[vid] == ref).all(axis=(1, 2, 3)))
            assert len(matches) == 1 and matches[0] != t


def test_clip_references_avoid_the_whole_clip(grid_dataset):
    stage = STAGES[3]
    frames = _frames_by_video(grid_dataset, (stage.height, stage.width))
    for e in iter_examples(grid_dataset, stage, num_references=5, seed=0):
        (vid, t0), = [(v, i) for v, f in frames.items() for i in np.flatnonzero((f == e["target"][0]).all(axis=(1, 2, 3)))]
        assert all(np.array_equal(frames[vid][t0 + j], e["target"][j]) for j in range(5)), "5 consecutive frames"
        for ref in e["references"].reshape(5, 3, stage.height, stage.width):
            index = np.flatnonzero((frames[vid] == ref).all(axis=(1, 2, 3)))[0]
            assert not t0 <= index < t0 + 5


def test_a_fixed_seed_gives_identical_examples(grid_dataset):
    stage = STAGES[0]
    a = collate(list(iter_examples(grid_dataset, stage, 5, seed=7))[:8])
    b = collate(list(iter_examples(grid_dataset, stage, 5, seed=7))[:8])
    c = collate(list(iter_examples(grid_dataset, stage, 5, seed=8))[:8])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["references"], c["references"])
    seeds = {epoch: [u.seed for u in plan_units(grid_dataset, seed=1, epoch=epoch)] for epoch in (0, 1)}
    assert seeds[0] != seeds[1], "each epoch draws new targets and references"


def test_interleave_yields_every_item_once_in_each_streams_order_and_mixed():
    streams = [[(k, i) for i in range(n)] for k, n in enumerate((10, 10, 5, 20))]
    out = list(interleave([iter(s) for s in streams], [len(s) for s in streams], np.random.default_rng(0)))
    assert sorted(out) == sorted(x for s in streams for x in s)
    assert all([x for x in out if x[0] == k] == s for k, s in enumerate(streams))
    assert len({k for k, _ in out[:12]}) >= 3, "the first dozen items come from most streams, not one"
    again = list(interleave([iter(s) for s in streams], [len(s) for s in streams], np.random.default_rng(0)))
    assert again == out


def test_a_batch_mixes_videos_unless_mixing_is_off(grid_dataset):
    """Issue 13: batch after batch of one video made the generator chase that video and forget the other."""
    stage = STAGES[0]
    frames = _frames_by_video(grid_dataset, (stage.height, stage.width))

    def videos(examples):
        return [next(v for v, f in frames.items() if (f == e["target"]).all(axis=(1, 2, 3)).any()) for e in examples]

    mixed = videos(list(iter_examples(grid_dataset, stage, 5, seed=0))[:8])
    assert len(set(mixed)) == 2, mixed
    straight = videos(list(iter_examples(grid_dataset, stage, 5, seed=0, mix=1))[:8])
    assert len(set(straight)) == 1, straight


def test_an_empty_split_is_a_clear_error(grid_dataset):
    with pytest.raises(ValueError, match="split 'test'"):
        plan_units(grid_dataset, split="test")


def _ray_batches(manifest_uri: str, stage: StageConfig) -> list[dict[str, torch.Tensor]]:
    ds = examples_dataset(manifest_uri, stage, 5, seed=11)
    return list(ds.iter_torch_batches(batch_size=stage.batch_size, dtypes=TORCH_DTYPES))


def test_ray_dataset_streams_the_same_examples_locally_and_from_s3(grid_dataset, ray_local, s3_server):
    stage = STAGES[0]
    expected = list(iter_examples(grid_dataset, stage, 5, seed=11))
    local = _ray_batches(grid_dataset, stage)
    assert sum(len(b["target"]) for b in local) == len(expected)
    first = collate(expected[: stage.batch_size])
    assert all(torch.equal(local[0][k], first[k]) for k in first)

    bucket = s3_server.make_bucket()
    root = manifest_root(grid_dataset)
    for uri in storage.list_files(root):
        storage.upload_file(uri, f"{bucket}/grid/{uri[len(root) + 1:]}")
    remote = _ray_batches(f"{bucket}/grid/manifest.json", stage)
    assert len(remote) == len(local)
    assert all(torch.equal(r[k], l[k]) for r, l in zip(remote, local) for k in r)


def test_step_batches_resume_at_any_step_with_the_same_batches(grid_dataset):
    from julnet.data.loader import StepBatches

    stage = STAGES[0].model_copy(update={"batch_size": 64})
    straight = StepBatches(grid_dataset, stage, 5, 5, seed=2)
    assert straight.per_epoch == 2
    sequence = [straight(step) for step in (1, 2, 3, 4)]
    resumed = StepBatches(grid_dataset, stage, 5, 5, seed=2)
    assert all(torch.equal(resumed(4)[k], sequence[3][k]) for k in sequence[3])
    assert all(torch.equal(resumed(2)[k], sequence[1][k]) for k in sequence[1])
    assert not torch.equal(sequence[0]["references"], sequence[2]["references"]), "a new epoch draws anew"


def test_training_and_evaluation_see_the_same_crop_mask_and_audio_for_a_frame(grid_dataset):
    """Issue 13: what the model trains on is what the held-out suite scores it on, frame for frame (target crop,
    masked source, audio window); only the reference draw differs, from the same video's frames with a face."""
    from julnet.config import load_config
    from julnet.evaluation.heldout import plan_videos, video_batches

    cfg = load_config("tiny", ["evaluation.split=train", "evaluation.max_frames=6", "evaluation.max_frames_per_video=6"])
    stage = cfg.train.stage("frame")
    train = list(iter_examples(grid_dataset, stage, num_references=5, seed=0))
    plan = plan_videos(grid_dataset, cfg.evaluation)[0]
    scored = next(video_batches(plan, cfg.evaluation, (stage.height, stage.width), 5)).batch
    for i in range(len(scored["target"])):
        target = scored["target"][i].numpy()
        (twin,) = [e for e in train if np.array_equal(e["target"], target)]
        assert np.array_equal(twin["source"], scored["source"][i].numpy()), "the same masked source"
        assert np.array_equal(twin["audio"], scored["audio"][i].numpy()), "the same audio window"
