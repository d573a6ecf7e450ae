from __future__ import annotations

from pathlib import Path

import pytest

from julnet.config import ConfigError, load_config
from tests.conftest import run_cli


def test_presets_carry_the_papers_settings():
    paper = load_config("paper")
    assert (paper.loss.un, paper.loss.ad, paper.loss.pe, paper.loss.sync) == (1.0, 1.0, 10.0, 0.1)
    assert paper.hist.bins == 11 and paper.optim.lr == 1e-4
    assert max((s.height, s.width) for s in paper.train.stages) == (416, 320)
    tiny = load_config("tiny")
    assert (tiny.train.stages[0].height, tiny.train.stages[0].width) == (104, 80)
    assert tiny.generator.encoder_channels[-1] < paper.generator.encoder_channels[-1]
    assert tiny.loss == paper.loss, "tiny inherits the paper's loss weights"


def test_overrides_are_typed_and_reach_nested_keys_and_list_items():
    cfg = load_config("tiny", ["hist.bins=9", "hist.spacing=log", "train.stages.1.steps=7", "optim.grad_clip=1.5"])
    assert cfg.hist.bins == 9 and cfg.hist.spacing == "log"
    assert cfg.train.stages[1].steps == 7 and cfg.optim.grad_clip == 1.5


def test_yaml_file_extends_a_preset(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: paper\nname: mine\nhist:\n  bins: 13\n")
    cfg = load_config(str(path))
    assert cfg.name == "mine" and cfg.hist.bins == 13 and cfg.loss.pe == 10.0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("hist.binz=3", "hist.binz"),
        ("nonsense=1", "nonsense"),
        ("hist.bins=1", "hist.bins"),
        ("loss.pe=-1", "loss.pe"),
        ("train.stages.0.height=102", "train.stages.0.height"),
        ("train.stages.0.width=81", "train.stages.0.width"),
        ("hist.spacing=cubic", "hist.spacing"),
        ("audio.window=4", "audio"),
        ("train.stages.9.steps=1", "train.stages.9"),
        ("perceptual.vgg.path=/weights/vgg19.pth", "perceptual.vgg_width"),  # tiny's narrow VGG has no public weights
        ("perceptual.vgg.allow_random_init=false", "perceptual.vgg_width"),
    ],
)
def test_invalid_config_names_the_key(override: str, key: str):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert key in str(err.value)


def test_unknown_key_in_yaml_is_rejected(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny\nun:\n  hiden_channels: 3\n")
    with pytest.raises(ConfigError, match="un.hiden_channels"):
        load_config(str(path))


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="paper, tiny"):
        load_config("huge")


def test_cli_rejects_bad_config_before_building_anything(tmp_path: Path):
    out = tmp_path / "run"
    proc = run_cli("train", "--config", "tiny", "--synthetic", "--steps", "1", "--out", str(out), "--set", "hist.bins=1", check=False)
    assert proc.returncode == 2
    assert "hist.bins" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_flat_config_has_dotted_scalar_keys():
    flat = load_config("tiny").flat()
    assert flat["hist.bins"] == 11 and flat["train.stages.0.height"] == 104
    assert all(not isinstance(v, dict) for v in flat.values())
