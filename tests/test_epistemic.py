"""Epistemic uncertainty (issue 16): the generator's spread over K reference sets, in `julnet generate` and its settings."""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor

from julnet.batch import Pair, split_done
from julnet.config import ConfigError, load_config
from julnet.data.video import read_audio, read_frames
from julnet.evaluation.epistemic import reference_spread
from julnet.evaluation.heldout import plan_videos, video_batches
from julnet.evaluation.result import format_table
from julnet.evaluation.suite import evaluate, load_judges
from julnet.face import mouth_box
from julnet.inference import dub, load_model
from julnet.data.frames import flatten_batch
from julnet.models.generator import GeneratorOutput
from tests.conftest import GRID_CLIPS, run_cli

VIDEO, SPEECH = GRID_CLIPS


def _ignores_references(source: Tensor, references: Tensor, audio: Tensor) -> GeneratorOutput:
    return GeneratorOutput(source * 0.5 + audio.mean(dim=(1, 2))[:, None, None, None], source)


def _copies_first_reference(source: Tensor, references: Tensor, audio: Tensor) -> GeneratorOutput:
    return GeneratorOutput(references[:, :3], source)


def test_a_generator_that_ignores_its_references_has_no_spread() -> None:
    g = torch.Generator().manual_seed(0)
    source, audio = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 4, 5, generator=g)
    first = _ignores_references(source, torch.rand(2, 6, 8, 8, generator=g), audio).image
    spread = reference_spread(_ignores_references, first, source, torch.rand(3, 2, 6, 8, 8, generator=g), audio)
    assert spread.shape == (2, 1, 8, 8) and torch.equal(spread, torch.zeros_like(spread))


def test_a_generator_that_copies_a_reference_spreads_as_the_references_do() -> None:
    g = torch.Generator().manual_seed(1)
    sets = torch.rand(4, 2, 6, 8, 8, generator=g)  # K = 4 sets of R = 2 references for 2 frames
    source, audio = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 4, 5, generator=g)
    first = _copies_first_reference(source, sets[0], audio).image
    spread = reference_spread(_copies_first_reference, first, source, sets[1:], audio)
    copied = sets[:, :, :3].double()  # (K, B, 3, H, W): what each pass outputs
    expected = ((copied - copied.mean(0)) ** 2).mean(0).sqrt().mean(1, keepdim=True)
    torch.testing.assert_close(spread.double(), expected, rtol=1e-5, atol=1e-6)
    assert float(spread.min()) > 0


def test_reference_sets_of_another_batch_are_refused() -> None:
    source, audio = torch.rand(2, 3, 8, 8), torch.rand(2, 4, 5)
    with pytest.raises(ValueError, match="reference sets"):
        reference_spread(_copies_first_reference, source, source, torch.rand(3, 1, 6, 8, 8), audio)
    with pytest.raises(ValueError, match="reference sets"):
        reference_spread(_copies_first_reference, source, source, torch.rand(0, 2, 6, 8, 8), audio)


@pytest.mark.parametrize(
    "override, message",
    [
        ("generate.epistemic_samples=1", "generate.epistemic_samples: 1 reference set has no spread"),
        ("generate.epistemic_samples=-2", "generate.epistemic_samples: Input should be greater than or equal to 0"),
        ("evaluation.epistemic_samples=1", "evaluation.epistemic_samples: 1 reference set has no spread"),
        ("generate.heat_epistemic_max=0", "generate.heat_epistemic_max: Input should be greater than 0"),
    ],
)
def test_bad_epistemic_settings_fail_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_epistemic_video_without_samples_is_refused_before_any_output(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an epistemic video needs generate.epistemic_samples >= 2"):
        dub(VIDEO, SPEECH, load_model(model_dir), tmp_path / "out.mp4", epistemic_video=tmp_path / "epistemic.mp4")
    assert list(tmp_path.iterdir()) == []


def _short_clip(directory: Path, frames: int) -> tuple[Path, Path]:
    """The first `frames` frames of the GRID clip (near-lossless, no audio) and as much of the other clip's speech."""
    video, speech = directory / "short.mp4", directory / "short.wav"
    with av.open(str(video), "w") as c:
        stream = c.add_stream("libx264", rate=25, options={"crf": "0"})
        source = read_frames(VIDEO)[:frames]
        stream.width, stream.height, stream.pix_fmt = source.shape[2], source.shape[1], "yuv444p"
        for i, f in enumerate(source):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode())
    samples = read_audio(SPEECH)[: frames * 16000 // 25]
    with wave.open(str(speech), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return video, speech


def test_generate_with_epistemic_samples_adds_the_map_and_leaves_the_dubbed_video_alone(model_dir: Path, tmp_path: Path) -> None:
    video, speech = _short_clip(tmp_path, 20)
    plain = tmp_path / "plain.mp4"  # through the CLI too: float results depend on the process's torch thread count
    run_cli("generate", "--video", str(video), "--audio", str(speech), "--model", str(model_dir), "--out", str(plain))
    out, report = tmp_path / "out.mp4", tmp_path / "frames.json"
    proc = run_cli("generate", "--video", str(video), "--audio", str(speech), "--model", str(model_dir), "--out", str(out),
                   "--report", str(report), "--epistemic-samples", "3", "--epistemic-video")
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    heat = tmp_path / "out.epistemic.mp4"
    assert printed["epistemic_video"] == str(heat)

    written = json.loads(report.read_text())
    assert written["settings"]["epistemic_samples"] == 3
    values = [e["epistemic_mean"] for e in written["frames"]]
    assert all(v is not None and math.isfinite(v) and v >= 0 for v in values)
    assert max(values) > 0  # a generator that reads its references moves when they change
    stats = written["summary"]["epistemic_mean"]
    assert stats["min"] == pytest.approx(min(values)) and stats["max"] == pytest.approx(max(values))

    dubbed = read_frames(out)
    assert np.array_equal(dubbed, read_frames(plain))  # the output is the first reference set's, as without sampling
    with av.open(str(heat)) as c:
        assert c.streams.audio, "no audio stream in the epistemic video"
    heat_frames = read_frames(heat)
    assert len(heat_frames) == len(dubbed) == written["summary"]["frames"]
    assert not np.array_equal(heat_frames, dubbed)  # the heat map is blended over the mouth


def test_heldout_batches_carry_seeded_resampled_reference_sets_that_leave_the_first_alone(heldout: str) -> None:
    settings = load_config("tiny", ["evaluation.max_frames_per_video=6", "evaluation.batch_size=4", "evaluation.epistemic_samples=3"]).evaluation
    plan = plan_videos(heldout, settings)[0]
    on = list(video_batches(plan, settings, (104, 80), 5))
    off = list(video_batches(plan, settings.model_copy(update={"epistemic_samples": 0}), (104, 80), 5))
    assert [b.resampled.shape for b in on] == [(4, 2, 15, 104, 80), (2, 2, 15, 104, 80)] and all(b.resampled is None for b in off)
    assert all(torch.equal(a.batch["references"], b.batch["references"]) for a, b in zip(on, off))
    again = next(video_batches(plan, settings, (104, 80), 5)).resampled
    assert torch.equal(again, on[0].resampled) and not torch.equal(on[0].resampled[:, 0], on[0].resampled[:, 1])


def test_evaluation_ranks_the_true_error_by_the_epistemic_map_next_to_sigma(heldout: str, model_dir: Path) -> None:
    loaded = load_model(model_dir)
    sets = ["evaluation.max_frames_per_video=6", "evaluation.batch_size=4", "evaluation.sparsification_steps=10"]
    settings = load_config("tiny", [*sets, "evaluation.epistemic_samples=3"])
    judges = load_judges(settings)
    result = evaluate(loaded, heldout, settings, judges=judges)
    plain = evaluate(loaded, heldout, load_config("tiny", sets), judges=judges)

    keys = {"spearman_epistemic", "ause_epistemic", "aurg_epistemic", "aurc_epistemic", "eaurc_epistemic"}
    m = result.metrics
    assert keys <= m.keys() and not keys & plain.metrics.keys() and all(math.isfinite(m[k]) for k in keys)
    assert {k: v for k, v in m.items() if k not in keys} == plain.metrics  # sampling changes no other number
    assert len(result.sparsification["epistemic"]) == 10 and "epistemic" not in plain.sparsification
    assert "spearman_epistemic" in format_table(result)

    # By hand: the K = 3 outputs per frame, their population std averaged over colour channels, scipy's Spearman.
    ranks, spread_means, errors = [], [], []
    top, left, side = mouth_box(104, 80)
    with torch.no_grad():
        for chunk in video_batches(plan_videos(heldout, settings.evaluation)[0], settings.evaluation, (104, 80), 5):
            frames = flatten_batch(chunk.batch, "frame", torch.device("cpu"))
            for i in range(len(frames.target)):
                sets_i = [frames.references[i : i + 1], *(chunk.resampled[i, s][None].float() / 255 for s in range(2))]
                images = [loaded[1].generator(frames.source[i : i + 1], r, frames.audio[i : i + 1]).image[0].double() for r in sets_i]
                spread = torch.stack(images).std(dim=0, correction=0).mean(dim=0).numpy()
                error = (images[0] - frames.target[i].double()).abs().mean(dim=0).numpy()
                ranks.append(stats.spearmanr(spread.ravel(), error.ravel()).statistic)
                spread_means.append(spread[top : top + side, left : left + side].mean())
                errors.append(error[top : top + side, left : left + side].mean())
    assert m["spearman_epistemic"] == pytest.approx(np.mean(ranks), rel=1e-4)
    kept = np.array(errors)[np.argsort(spread_means, kind="stable")]  # least spread kept first
    assert m["aurc_epistemic"] == pytest.approx(np.mean(np.cumsum(kept) / np.arange(1, len(kept) + 1)), rel=1e-4)


def test_a_batch_pair_asked_for_an_epistemic_video_is_done_only_once_it_is_uploaded(tmp_path: Path) -> None:
    pair = Pair(name="alice", video="v.mp4", audio="a.wav")
    folder = tmp_path / "alice"
    folder.mkdir()
    for file in ("dubbed.mp4", "report.json"):
        (folder / file).write_bytes(b"x")
    assert split_done([pair], str(tmp_path), False, False) == ([], [pair])
    assert split_done([pair], str(tmp_path), False, True) == ([pair], [])
    (folder / "epistemic.mp4").write_bytes(b"x")
    assert split_done([pair], str(tmp_path), False, True) == ([], [pair])
