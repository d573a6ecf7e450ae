"""Build JULNet's networks and optimizers from a config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from julnet.config import Config
from julnet.models.discriminator import PatchDiscriminator, clip_discriminator, frame_discriminator
from julnet.models.syncnet import SyncNet
from julnet.models.talking_face import TalkingFace, build_talking_face
from julnet.models.vgg import VGG19Features
from julnet.pretrained import load_into


@dataclass
class Models:
    talking_face: TalkingFace  # generator + uncertainty module
    frame_discriminator: PatchDiscriminator
    clip_discriminator: PatchDiscriminator
    syncnet: SyncNet  # frozen
    vgg: VGG19Features  # frozen

    TRAINED = ("talking_face", "frame_discriminator", "clip_discriminator")

    def trained(self) -> dict[str, nn.Module]:
        """The networks this project trains, unwrapped from DDP, under their checkpoint names (the talking face's
        generator and uncertainty module apart, as checkpoints have always stored them)."""
        face = bare(self.talking_face)
        return {"generator": face.generator, "uncertainty": face.uncertainty, **{name: bare(getattr(self, name)) for name in self.TRAINED[1:]}}

    def train(self, mode: bool = True) -> Models:
        for name in self.TRAINED:
            bare(getattr(self, name)).train(mode)
        return self


def bare(module: nn.Module) -> nn.Module:
    """The module itself, unwrapped from DistributedDataParallel if it is wrapped."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


@dataclass
class Optimizers:
    generator: torch.optim.Optimizer  # generator + uncertainty module
    frame_discriminator: torch.optim.Optimizer
    clip_discriminator: torch.optim.Optimizer

    def all(self) -> dict[str, torch.optim.Optimizer]:
        return dict(vars(self))


def build_models(cfg: Config, device: torch.device | str = "cpu", pretrained: bool = True) -> Models:
    """All networks, seeded by train.seed so random init is reproducible; frozen ones loaded when `pretrained`."""
    torch.manual_seed(cfg.train.seed)
    models = Models(
        talking_face=build_talking_face(cfg),
        frame_discriminator=frame_discriminator(cfg.discriminator),
        clip_discriminator=clip_discriminator(cfg.discriminator, cfg.audio.window),
        syncnet=SyncNet(cfg, cfg.audio.window),
        vgg=VGG19Features(cfg.perceptual.vgg_width),
    )
    if pretrained:
        load_into(models.vgg, cfg.perceptual.vgg, "VGG-19", "perceptual.vgg", cfg.tracking.uri)
        load_into(models.syncnet, cfg.syncnet.weights, "SyncNet", "syncnet.weights", cfg.tracking.uri)
    for name in ("talking_face", "frame_discriminator", "clip_discriminator", "syncnet", "vgg"):
        getattr(models, name).to(device)
    return models


def build_optimizers(cfg: Config, models: Models) -> Optimizers:
    o = cfg.optim
    # Fused Adam on CUDA (train.fused_adam): one kernel per step, and it can skip a step on the device (found_inf),
    # which TrainStep's deferred finite check relies on. The CPU keeps torch's default Adam.
    fused = cfg.train.fused_adam and next(bare(models.talking_face).parameters()).device.type == "cuda"

    def adam(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, betas=o.betas, **({"fused": True} if fused else {}))

    return Optimizers(
        generator=adam(list(models.talking_face.parameters()), o.lr),
        frame_discriminator=adam(list(models.frame_discriminator.parameters()), o.d_lr),
        clip_discriminator=adam(list(models.clip_discriminator.parameters()), o.d_lr),
    )


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)
