"""`julnet info`: parameter counts per module and forward GFLOPs at the configured resolution."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from julnet.config import Config
from julnet.models.build import build_models


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _gflops(module: nn.Module, *inputs: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops() / 1e9


def model_info(cfg: Config) -> dict[str, Any]:
    """Sizes and costs (batch 1, largest stage resolution), computed on the meta device: no real compute."""
    stage = max(cfg.train.stages, key=lambda s: s.height * s.width)
    h, w = stage.height, stage.width
    with torch.device("meta"):
        m = build_models(cfg, device="meta", pretrained=False)
        g, un = m.talking_face.generator, m.talking_face.uncertainty
        frame = torch.rand(1, 3, h, w)
        refs = torch.rand(1, 3 * cfg.generator.num_references, h, w)
        audio = torch.rand(1, cfg.audio.dim, cfg.audio.window)
        features = torch.rand(1, g.feature_channels, h, w)
        clip = torch.rand(1, 3 * cfg.audio.window, h, w)
        mouths = torch.rand(1, 3 * cfg.audio.window, cfg.syncnet.mouth_size, cfg.syncnet.mouth_size)
        gflops = {
            "generator": _gflops(g, frame, refs, audio),
            "uncertainty": _gflops(un, frame, features if cfg.un.use_features else None),
            "frame_discriminator": _gflops(m.frame_discriminator, frame),
            "clip_discriminator": _gflops(m.clip_discriminator, clip),
            "syncnet": _gflops(m.syncnet, audio, mouths),
            "vgg": _gflops(m.vgg, frame),
        }
    parts = {name: _params(child) for name, child in g.named_children()}
    return {
        "config": cfg.name,
        "generator_kind": cfg.generator.kind,
        "resolution": [w, h],
        "params": {
            "generator": _params(g),
            "generator_parts": parts,
            "uncertainty": _params(un),
            "frame_discriminator": _params(m.frame_discriminator),
            "clip_discriminator": _params(m.clip_discriminator),
            "syncnet": _params(m.syncnet),
            "vgg": _params(m.vgg),
        },
        "gflops": {k: round(v, 3) for k, v in gflops.items()},
    }
