"""A real GRID clip with damaged MP2 audio frames: a lost frame becomes silence in its place, too many are refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from julnet.config import load_config
from julnet.data import audio as audio_features
from julnet.data.manifest import read_manifest
from julnet.data.preprocess import run
from julnet.data.video import Audio, VideoError, decode_audio, read_audio, read_frames
from julnet.errors import BadAudioError
from julnet.inference.media import read_speech
from tests.conftest import GRID_CLIPS

CLIP = GRID_CLIPS[0]  # bbaf2n.mpg: MPEG-1 video, MP2 audio at 44.1 kHz in 114 frames of 26 ms
ONE = [39]  # an audio frame at 1.02 s, in the middle of the speech
THREE = [20, 56, 90]


def damage_audio(dst: Path, packets: list[int]) -> None:
    """A copy of CLIP with the 4-byte frame header (sync word, bit rate, sample rate) of these audio packets zeroed."""
    data = bytearray(CLIP.read_bytes())
    with av.open(str(CLIP)) as container:
        for k, packet in enumerate(container.demux(container.streams.audio[0])):
            if k in packets:
                assert packet.pos is not None, "pick packets that start a PES packet: their file offset is known"
                at = data.find(bytes(packet)[:32], packet.pos)  # the frame starts within its PES packet
                assert 0 <= at - packet.pos < 2048
                data[at : at + 4] = bytes(4)
    dst.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("damaged")
    paths = {"one": folder / "one_header.mpg", "three": folder / "three_headers.mpg"}
    damage_audio(paths["one"], ONE)
    damage_audio(paths["three"], THREE)
    return paths


def _plain_decode_fails(path: Path) -> bool:
    """Whether PyAV's container.decode stops with an error on the audio (what made such clips 'corrupt')."""
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(container.streams.audio[0]):
                pass
        except av.InvalidDataError:
            return True
    return False


def test_a_damaged_audio_frame_is_silence_in_its_place_and_the_rest_stays_aligned(damaged: dict[str, Path]) -> None:
    assert _plain_decode_fails(damaged["one"]), "the damaged header makes FFmpeg's MP2 decoder reject the packet"
    clean = read_audio(CLIP, 16000, start=0.0)
    audio = decode_audio(damaged["one"], 16000, start=0.0)
    # The demuxer's parser glues the headerless frame to a neighbour: two 26 ms frames are lost.
    assert len(audio.lost) == 2 and audio.lost[0][0] == pytest.approx(ONE[0] * 1152 / 44100, abs=1e-3)
    assert audio.lost_seconds == pytest.approx(2 * 1152 / 44100, abs=1e-4)
    assert 0.98 <= audio.decoded_fraction < 0.99 and audio.seconds == pytest.approx(len(clean) / 16000, abs=1e-3)
    samples = audio.samples
    assert len(samples) == len(clean), "the track keeps its length"
    (first, _), (at, length) = audio.lost
    before, after = round(first * 16000) - 16, round((at + length) * 16000) + 160
    np.testing.assert_array_equal(samples[:before], clean[:before])
    for t, seconds in audio.lost:
        inside = slice(round(t * 16000) + 16, round((t + seconds) * 16000) - 16)
        assert np.sqrt(np.mean(samples[inside] ** 2)) < 1e-3 < np.sqrt(np.mean(clean[inside] ** 2)), "silence where speech was lost"
    # Not shifted: the rest is the clean decode to a few 16-bit steps (the MP2 decoder's filter history differs),
    # where a shift of one sample would differ by 100 times more.
    assert np.abs(samples[after:] - clean[after:]).max() < 2e-4 < np.abs(clean[after + 1 :] - clean[after:-1]).mean()
    assert len(read_frames(damaged["one"])) == 75


def test_too_much_damaged_audio_is_refused_as_bad_audio(damaged: dict[str, Path]) -> None:
    with pytest.raises(VideoError) as err:
        decode_audio(damaged["three"], 16000)
    assert err.value.reason == "bad_audio"
    assert err.value.detail.startswith("only 94.7 % of the audio track decodes (0.157 of 2.978 s lost in 5 places, the first at 0.522 s")


def test_preprocessing_repairs_one_damaged_frame_and_rejects_more_naming_the_audio(damaged: dict[str, Path], tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in damaged.values():
        shutil.copy(path, raw / path.name)
    manifest, report = run(str(raw), str(tmp_path / "out"), load_config("tiny", ["preprocess.test_fraction=0"]))
    assert report.accepted == 1 and [(r.reason, Path(r.source).name) for r in report.rejected] == [("bad_audio", "three_headers.mpg")]
    assert "of the audio track decodes" in report.rejected[0].detail
    video = read_manifest(str(tmp_path / "out" / "manifest.json")).videos[0]
    assert video.id == "one_header" and video.frames == 75 and video.fixes == ["audio_repaired"]
    windows = np.asarray(pq.read_table(tmp_path / "out" / video.shard).column("audio").to_pylist(), np.float32).reshape(75, 80, 5)
    repaired = audio_features.frame_features(decode_audio(damaged["one"], 16000, start=0.0).samples, 16000, 75, 25, 80)
    np.testing.assert_allclose(windows[:, :, 2], repaired, atol=1e-4)
    clean = audio_features.frame_features(read_audio(CLIP, 16000, start=0.0), 16000, 75, 25, 80)
    np.testing.assert_array_equal(repaired[:24], clean[:24])  # untouched before the damage at frame 25
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rejected"][0]["reason"] == "bad_audio"


def test_generate_reads_damaged_speech_the_same_way_with_a_warning(damaged: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="julnet.inference.media"):
        samples = read_speech(damaged["one"], 16000)
    np.testing.assert_array_equal(samples, decode_audio(damaged["one"], 16000).samples)
    assert "damaged audio in" in caplog.text and "0.052 of 2.978 s lost in 2 places" in caplog.text
    with pytest.raises(BadAudioError, match=r"damaged audio in .*three_headers\.mpg: only 94\.7 % of the audio track decodes"):
        read_speech(damaged["three"], 16000)


def test_nothing_lost_in_a_clean_clip() -> None:
    audio = decode_audio(CLIP, 16000)
    assert isinstance(audio, Audio) and audio.lost == () and audio.decoded_fraction == 1.0 and audio.describe_loss() == "nothing lost"
