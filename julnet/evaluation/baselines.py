"""Floor rows: models any trained one must beat, measured by the same suite (`julnet evaluate --model baseline:...`).

`baseline:reference-copy` outputs the first of the 5 reference frames: the right face with the wrong mouth, which
costs nothing and scores well on a talking face that barely moves. `baseline:untrained` is the config's networks at
their seeded initialisation. Neither has a config of its own: `--config` gives resolution and references.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from julnet.config import Config, ConfigError
from julnet.models.generator import GeneratorOutput
from julnet.models.talking_face import TalkingFace
from julnet.models.uncertainty import UncertaintyOutput
from julnet.models.build import build_models

BASELINES = ("baseline:reference-copy", "baseline:untrained")


class ReferenceCopy(nn.Module):
    """The first reference frame as the output; its 'features' are the image itself."""

    def forward(self, source: Tensor, references: Tensor, audio: Tensor) -> GeneratorOutput:
        image = references[:, :3]
        return GeneratorOutput(image, image)


class NoUncertainty(nn.Module):
    """ε̂ = 0 and σ = 1 at every pixel: no ranking, so the rank metrics come out unavailable, not flattering."""

    def forward(self, image: Tensor, features: Tensor | None = None) -> UncertaintyOutput:
        zero = torch.zeros_like(image[:, :1])
        return UncertaintyOutput(zero, zero)


def is_baseline(model: str) -> bool:
    return model.startswith("baseline:")


def load_baseline(name: str, cfg: Config | None) -> tuple[Config, TalkingFace]:
    """(config, talking face) of a named floor row, in eval mode."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}: choose one of {', '.join(BASELINES)}")
    if cfg is None:
        raise ConfigError(f"{name} has no config of its own: pass --config (the preset of the models it is compared with)")
    if name == "baseline:reference-copy":
        return cfg, TalkingFace(ReferenceCopy(), NoUncertainty(), use_features=False).eval()
    return cfg, build_models(cfg, pretrained=False).talking_face.eval()
