"""A talking-face model: any generator family plus the uncertainty module reading its output (paper 3.2, 4.3.3).

masked source + references + audio window -> generator (chosen by `generator.kind`) -> image, features
image (+ features when `un.use_features`) -> uncertainty module -> ε̂, log σ

`TalkingFace` is the one place the two are wired together: training, evaluation, inference and `julnet info` call
it. A generator family is a class in GENERATORS taking the config and returning GeneratorOutput, with `kind` (its
`generator.kind`) and `feature_channels` (the channels of the features it hands the uncertainty module).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from julnet.config import Config
from julnet.models.generator import Generator, GeneratorOutput
from julnet.models.uncertainty import UncertaintyModule, UncertaintyOutput
from julnet.models.wav2lip import Wav2LipGenerator

GENERATORS: dict[str, type[nn.Module]] = {cls.kind: cls for cls in (Generator, Wav2LipGenerator)}


class TalkingFaceOutput(NamedTuple):
    generated: GeneratorOutput
    uncertainty: UncertaintyOutput


class TalkingFace(nn.Module):
    """Generator + uncertainty module; `use_features` decides whether the module also reads the generator's features."""

    trained_stage: str | None = None  # set by julnet.models.trained.load_model: the stage a checkpoint was trained on

    def __init__(self, generator: nn.Module, uncertainty: nn.Module, use_features: bool):
        super().__init__()
        self.generator, self.uncertainty, self.use_features = generator, uncertainty, use_features

    def forward(self, source: Tensor, references: Tensor, audio: Tensor) -> TalkingFaceOutput:
        gen = self.generator(source, references, audio)
        return TalkingFaceOutput(gen, self.uncertainty(gen.image, gen.features if self.use_features else None))


def build_uncertainty(cfg: Config, feature_channels: int) -> UncertaintyModule:
    """The uncertainty module as `un` configures it: inputs, which of them carry gradient, σ at initialisation."""
    un = cfg.un
    return UncertaintyModule(
        feature_channels if un.use_features else 0,
        un.hidden_channels,
        un.detach_features,
        (un.log_sigma_min, un.log_sigma_max),
        init_sigma=un.init_sigma,
        detach_image=un.detach_image,
    )


def build_talking_face(cfg: Config) -> TalkingFace:
    """The generator family `generator.kind` names, with the uncertainty module sized to its features."""
    generator = GENERATORS[cfg.generator.kind](cfg)
    return TalkingFace(generator, build_uncertainty(cfg, generator.feature_channels), cfg.un.use_features)
