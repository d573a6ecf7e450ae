"""The expert LSE: syncnet_python's SyncNet (layout of the published syncnet_v2.model), its MFCC input, and the suite.

The expert weights used here are a seeded random init saved to a file: TEST ONLY. They exercise the path from a
configured file to `lse_d` / `lse_c`; the LSE values they give are meaningless numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from julnet.config import PretrainedWeights, load_config
from julnet.data.manifest import manifest_root
from julnet.data.video import read_audio
from julnet.errors import MissingWeightsError
from julnet.evaluation.expert_syncnet import ExpertSyncNet, audio_mfcc, audio_windows, clip_count, expert_frames, load_expert_syncnet, pcm16
from julnet.evaluation.mfcc import mfcc
from julnet.evaluation.suite import _ExpertVideoSync, evaluate, load_judges
from julnet.evaluation.sync import lse
from julnet.face import mouth_box
from julnet.inference import load_model
from tests.conftest import GRID_CLIPS, HELDOUT_VIDEO

# syncnet_python SyncNetModel.S: (Sequential index, weight shape) of every conv / linear; batch norm follows at index + 1.
_CONVS = {
    "netcnnaud": [
        (0, (64, 1, 3, 3)), (4, (192, 64, 3, 3)), (8, (384, 192, 3, 3)), (11, (256, 384, 3, 3)), (14, (256, 256, 3, 3)), (18, (512, 256, 5, 4)),
    ],
    "netcnnlip": [
        (0, (96, 3, 5, 7, 7)), (4, (256, 96, 1, 5, 5)), (8, (256, 256, 1, 3, 3)), (11, (256, 256, 1, 3, 3)), (14, (256, 256, 1, 3, 3)),
        (18, (512, 256, 1, 6, 6)),
    ],
    "netfcaud": [(0, (512, 512)), (3, (1024, 512))],
    "netfclip": [(0, (512, 512)), (3, (1024, 512))],
}
_PARAMETERS = 13_631_616  # the sum of the weights, biases and batch-norm affine terms of the layers above


def _published_layout() -> dict[str, tuple[int, ...]]:
    """The keys and shapes syncnet_v2.model holds (saved in 2018, before torch had num_batches_tracked)."""
    keys: dict[str, tuple[int, ...]] = {}
    for trunk, layers in _CONVS.items():
        for index, shape in layers:
            keys[f"{trunk}.{index}.weight"], keys[f"{trunk}.{index}.bias"] = shape, shape[:1]
            if index != 3 or not trunk.startswith("netfc"):  # the last linear of a head has no batch norm after it
                for name in ("weight", "bias", "running_mean", "running_var"):
                    keys[f"{trunk}.{index + 1}.{name}"] = shape[:1]
    return keys


def _test_only_weights(path: Path, seed: int = 11) -> str:
    """TEST ONLY: a seeded random ExpertSyncNet state dict in the published file's format (no num_batches_tracked)."""
    torch.manual_seed(seed)
    state = {k: v for k, v in ExpertSyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return str(path)


def test_module_has_the_published_state_dict_layout():
    layout = _published_layout()
    state = ExpertSyncNet().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")} == layout
    assert len(layout) == 88 and sum(p.numel() for p in ExpertSyncNet().parameters()) == _PARAMETERS
    assert sum(math.prod(s) for k, s in layout.items() if not k.endswith(("running_mean", "running_var"))) == _PARAMETERS


def test_weights_load_strictly_and_a_wrong_file_is_one_line_naming_the_key(tmp_path: Path):
    path = _test_only_weights(tmp_path / "syncnet_v2.model")
    net = load_expert_syncnet(PretrainedWeights(path=path))
    assert isinstance(net, ExpertSyncNet) and not net.training
    assert torch.equal(net.netcnnlip[0].weight, torch.load(path, weights_only=True)["netcnnlip.0.weight"])
    state = torch.load(path, weights_only=True)

    def error(bad: dict) -> str:
        torch.save(bad, tmp_path / "bad.model")
        with pytest.raises(ValueError) as info:
            load_expert_syncnet(PretrainedWeights(path=str(tmp_path / "bad.model")))
        assert "\n" not in str(info.value) and "evaluation.expert_syncnet.path=" in str(info.value)
        return str(info.value)

    assert "missing key netcnnaud.0.weight" in error({f"__S__.{k}": v for k, v in state.items()})
    assert "unexpected key netfclip.5.weight" in error({**state, "netfclip.5.weight": torch.zeros(1)})
    wrong_shape = error({**state, "netfcaud.3.weight": torch.zeros(512, 512)})
    assert "key netfcaud.3.weight has shape (512, 512), expected (1024, 512)" in wrong_shape
    with pytest.raises(MissingWeightsError, match="evaluation.expert_syncnet.path="):
        load_expert_syncnet(PretrainedWeights(path=str(tmp_path / "absent.model")))
    assert "set evaluation.expert_syncnet.path" in load_expert_syncnet(PretrainedWeights()).reason


def test_mfcc_matches_python_speech_features_and_windows_follow_syncnet_python():
    import python_speech_features  # dev dependency: the reference syncnet_python calls

    samples = read_audio(GRID_CLIPS[0], 16000)
    pcm = pcm16(samples)
    assert pcm.dtype == np.int16 and int(pcm16(np.array([1.0, -1.0, 0.5]))[0]) == 32767 and int(pcm16(np.array([-1.0]))[0]) == -32768
    want = python_speech_features.mfcc(pcm, 16000)
    got = audio_mfcc(samples)
    assert got.shape == want.shape == (1 + math.ceil((len(pcm) - 400) / 160), 13)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    for n in (1, 399, 401, 4000):  # one padded frame, a partial last frame, silence (log of eps)
        x = np.zeros(n, np.int16) if n == 4000 else np.random.default_rng(n).integers(-3000, 3000, n).astype(np.int16)
        np.testing.assert_allclose(mfcc(x), python_speech_features.mfcc(x, 16000), rtol=1e-9, atol=1e-9)

    windows = audio_windows(want, 3, 2)  # syncnet_python: cct[:, :, :, 4i : 4i + 20] of the (1, 1, 13, rows) MFCC
    assert windows.shape == (2, 1, 13, 20) and torch.allclose(windows[1, 0], torch.tensor(want[16:36].T, dtype=torch.float32))
    assert clip_count(75, 48000) == 70 and clip_count(75, 640 * 30) == 25 and clip_count(5, 16000) == 0


def test_expert_frames_are_the_bgr_mouth_at_224():
    faces = torch.zeros(1, 3, 104, 80)
    top, left, side = mouth_box(104, 80)
    faces[:, 0, top : top + side, left : left + side] = 1.0  # a red mouth region
    frames = expert_frames(faces)
    assert frames.shape == (1, 3, 224, 224) and torch.all(frames[0, 2] == 255) and torch.all(frames[0, :2] == 0)


def test_streaming_expert_lse_equals_all_clips_at_once(tmp_path: Path):
    net = load_expert_syncnet(PretrainedWeights(path=_test_only_weights(tmp_path / "w.model")))
    generator = torch.Generator().manual_seed(0)
    faces, samples = torch.rand(12, 3, 104, 80, generator=generator), np.random.default_rng(0).uniform(-0.5, 0.5, 12 * 640 + 100)
    mfcc = audio_mfcc(samples)
    streamed = _ExpertVideoSync(net, mfcc, 0, clip_count(12, len(samples)))
    later = _ExpertVideoSync(net, mfcc, 4, clip_count(12, len(samples)))  # a stretch from frame 4 (after a faceless frame)
    with torch.no_grad():
        for rows in (slice(0, 3), slice(3, 7), slice(7, 12)):
            streamed.add(faces[rows], torch.zeros(0))
        later.add(faces[4:12], torch.zeros(0))
        frames = expert_frames(faces)
        video = net.embed_video(torch.stack([frames[i : i + 5] for i in range(7)]).transpose(1, 2))
        sound = net.embed_audio(audio_windows(mfcc, 0, 7))
    got, want = streamed.lse(15), lse(video, sound, 15)
    assert got["offset"] == want["offset"] and got["lse_d"] == pytest.approx(want["lse_d"], rel=1e-5)
    assert got["lse_c"] == pytest.approx(want["lse_c"], rel=1e-4, abs=1e-6)
    # The stretch's clips 4..6 are the video's clips 4..6, each against its own audio rows.
    assert later.lse(15)["lse_d"] == pytest.approx(lse(video[4:], sound[4:], 15)["lse_d"], rel=1e-5)


# ---------------------------------------------------------------- the suite


@pytest.fixture(scope="module")
def expert_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _test_only_weights(tmp_path_factory.mktemp("expert") / "syncnet_v2.model")


def test_suite_reports_expert_lse_from_the_source_audio(heldout: str, model_dir: Path, expert_file: str):
    settings = load_config("tiny", [f"evaluation.expert_syncnet.path={expert_file}", "evaluation.max_frames=12", "evaluation.batch_size=5"])
    judges = load_judges(settings)
    assert judges.sync.source == "expert" and judges.sync.suffix == ""
    result = evaluate(load_model(model_dir), heldout, settings, judges=judges)
    m = result.metrics
    assert result.lse_source == "expert" and result.networks["lse"] == expert_file and result.counts["lse_videos"] == 1
    assert math.isfinite(m["lse_d"]) and math.isfinite(m["lse_c"]) and m["lse_d"] > 0 and m["lse_c"] >= 0  # meaningless values
    assert not {"lse_d_own", "lse_c_own"} & m.keys() and "lse_d" not in result.unavailable

    # The held-out video's source gone: no expert LSE at all, with the reason; the other metrics stay.
    root = Path(manifest_root(heldout))
    moved = Path(str(root) + "-moved")
    if not moved.exists():
        import shutil

        shutil.copytree(root, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    for video in manifest["videos"]:
        video["source"] = str(moved / "gone" / f"{video['id']}.mpg")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    missing = evaluate(load_model(model_dir), str(moved / "manifest.json"), settings, judges=judges)
    reason = missing.unavailable["lse_d"]
    assert not {"lse_d", "lse_c"} & missing.metrics.keys() and reason == missing.unavailable["lse_c"]
    assert f"video {HELDOUT_VIDEO}" in reason and "gone" in reason and "not_found" in reason and "\n" not in reason
    assert missing.metrics["psnr"] == pytest.approx(m["psnr"])
